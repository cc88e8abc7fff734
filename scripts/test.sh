#!/usr/bin/env bash
# Set up, then run the whole test suite. Extra arguments go to pytest (after ours: "-n 0" runs it in one process).
#
# Two pytest-xdist workers, a test file to each at a time (--dist loadfile: a module's fixtures are set up once),
# beside the scenario groups that the multi-process tests read, which run in the background from the first test
# on (tests/conftest.py, tests/scripts/scenario_groups.py). TEST_WORKERS sets the number of workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
