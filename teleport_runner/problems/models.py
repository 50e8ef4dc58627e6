"""Small reference networks for the module presets (``lenet_mnist``, ``cnn_fashion``, ``cnn_cifar10``); any other
``nn.Module`` works the same way through ``problem.model._target_``."""
from __future__ import annotations

from typing import Sequence

from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling: conv 6@5x5 (padding 2 on 28x28 inputs) -> pool ->
    conv 16@5x5 -> pool -> 120 -> 84 -> classes. Four rescaling pairs: conv1-conv2, conv2-fc1 (through the
    flatten), fc1-fc2, fc2-fc3."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, image_size: int = 28):
        super().__init__()
        pad = 2 if image_size == 28 else 0
        side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, n_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def small_cnn(in_channels: int = 1, channels: Sequence[int] = (16, 32), hidden: int = 64, n_classes: int = 10,
              image_size: int = 28) -> nn.Sequential:
    """conv 3x3 (same padding) -> ReLU -> 2x2 max pool, per entry of ``channels``; then flatten -> hidden -> classes.
    A factory (a function returning the module): ``problem.model._target_`` takes either."""
    layers, c, side = [], in_channels, image_size
    for width in channels:
        layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c, side = width, side // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_classes))
