"""Schedules are pure functions of the run's length: which steps they teleport before."""
import pytest

from teleport_runner.errors import ConfigError
from teleport_runner.schedules import AtEpochs, AtSteps, Every


def test_every_starts_after_the_first_block_unless_told():
    assert list(Every(every=100).steps(1000)) == [100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert list(Every(every=100, offset=0).steps(300)) == [0, 100, 200]
    assert list(Every(every=100, offset=99, until=400).steps(1000)) == [99, 199, 299, 399]  # the official Rosenbrock code


def test_other_schedules_and_bad_values():
    assert AtSteps(steps=[4, 2, 4]).steps(10) == [2, 4]
    assert AtEpochs(epochs=[1, 3], step_offset=5).steps(100, steps_per_epoch=20) == [25, 65]
    with pytest.raises(ConfigError, match="schedule.offset"):
        Every(offset=-1)
    with pytest.raises(ConfigError, match="schedule.every"):
        Every(every=0)
