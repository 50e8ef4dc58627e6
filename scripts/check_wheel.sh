#!/usr/bin/env bash
# The installed wheel works anywhere: build it, install it into a fresh venv outside the checkout with the pinned
# constraints, and from another folder run a preset, --help, --version, a user config folder and teleport-report.
# Usage: scripts/check_wheel.sh [WORKDIR]   (default: a new temporary folder, removed at the end)
# CI runs it after `make test` (.ci/run). On this machine pip takes torch 2.13.0 from the local CPU wheel
# (--find-links); set WHEEL_CHECK_ALLOW_CUDA=1 where the CUDA build of torch is wanted.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ $# -ge 1 ]; then WORK="$1"; mkdir -p "$WORK"; else WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT; fi
WORK="$(cd "$WORK" && pwd)"
START=$SECONDS
step() { printf '[check_wheel %3ds] %s\n' $((SECONDS - START)) "$*"; }
fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }

step "building the wheel"
rm -rf "$WORK/dist" "$REPO/build"  # setuptools' build/ would keep files deleted from the checkout in the wheel
"$PYTHON" -m pip wheel --quiet --no-deps "$REPO" -w "$WORK/dist"
rm -rf "$REPO/build"
WHEEL="$(ls "$WORK"/dist/teleport_runner-*.whl)"
"$PYTHON" - "$WHEEL" "$REPO/teleport_runner/conf" <<'EOF' || fail "the wheel lacks config files"
import sys, zipfile
from pathlib import Path
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
wanted = {"teleport_runner/conf/" + p.relative_to(sys.argv[2]).as_posix() for p in Path(sys.argv[2]).rglob("*.yaml")}
missing = sorted(wanted - names)
print(f"  {len(wanted)} config files in the checkout, {len(wanted) - len(missing)} in the wheel")
sys.exit(f"  missing: {missing}" if missing else 0)
EOF

step "installing it into a fresh venv ($WORK/venv)"
rm -rf "$WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
# (the local index config makes pip warn about every package it has no folder for: noise, filtered)
"$BIN/pip" install --quiet -c "$REPO/requirements.lock" "$WHEEL" 2> >(grep -v 'is ignored: it is neither' >&2)
TORCH="$("$BIN/python" -c 'import torch; print(torch.__version__)')"
step "installed: torch $TORCH, $("$BIN/teleport-train" --version)"
if "$BIN/pip" list 2>/dev/null | grep -qi '^nvidia-' && [ "${WHEEL_CHECK_ALLOW_CUDA:-0}" != 1 ]; then
    fail "pip installed CUDA packages (torch $TORCH); expected the local CPU wheel"
fi

ELSEWHERE="$WORK/elsewhere"  # not the checkout: nothing there but what the wheel installed
rm -rf "$ELSEWHERE" && mkdir -p "$ELSEWHERE" && cd "$ELSEWHERE"
"$BIN/python" -c 'import teleport_runner, sys; sys.exit(0 if "site-packages" in teleport_runner.__file__ else 1)' \
    || fail "teleport_runner was not imported from the venv"
export WANDB_MODE=offline

step "teleport-train --version / python -m teleport_runner --version"
EXPECTED="teleport-train $("$PYTHON" -c 'import ast,sys; print(next(n.value.value for n in ast.parse(open(sys.argv[1]).read()).body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"))' "$REPO/teleport_runner/__init__.py")"
[ "$("$BIN/teleport-train" --version)" = "$EXPECTED" ] || fail "teleport-train --version is not '$EXPECTED'"
[ "$("$BIN/python" -m teleport_runner --version)" = "$EXPECTED" ] || fail "python -m teleport_runner --version"

step "teleport-train --help lists every preset"
HELP="$("$BIN/teleport-train" --help)"
for preset in "$REPO"/teleport_runner/conf/experiment/*.yaml; do
    name="$(basename "$preset" .yaml)"
    grep -q "experiment:.*\b$name\b" <<<"$HELP" || fail "--help does not list the preset $name"
done

step "teleport-train experiment=paper_booth (outputs under $ELSEWHERE/outputs)"
"$BIN/teleport-train" experiment=paper_booth dtype=float64 >booth.log 2>&1 || { cat booth.log; fail "paper_booth did not complete"; }
SUMMARY="$(ls outputs/runs/*/summary.json)"
"$BIN/python" - "$SUMMARY" <<'EOF' || fail "paper_booth's summary.json"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["status"] == "completed" and s["n_teleports"] == 1 and s["final_loss"] < 1e-2, s
print(f"  status {s['status']}, final loss {s['final_loss']:.3g}, teleports {s['n_teleports']}")
EOF

step "a user config folder adds on (-cd)"
mkdir -p my_conf/problem
printf '_target_: teleport_runner.problems.Booth\nstart: [4.0, -4.0]\n' >my_conf/problem/booth_near.yaml
"$BIN/teleport-train" -cd my_conf problem=booth_near symmetry=level_set steps=5 logger=jsonl plots=false \
    hydra.run.dir=user_run >user.log 2>&1 || { cat user.log; fail "the user config folder run"; }
grep -q '"status": "completed"' user_run/summary.json || fail "the user config folder run did not complete"

step "teleport-report outputs/runs"
"$BIN/teleport-report" outputs/runs >report.log 2>&1 || { cat report.log; fail "teleport-report failed"; }
[ -s outputs/runs/report.md ] || fail "teleport-report wrote no report.md"
step "passed ($WHEEL)"
