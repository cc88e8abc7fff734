import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The demo package lives in the repository, not in the installed distribution.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")

# pytest runs with --doctest-modules (pyproject.toml), which imports every .py file it collects. The scripts that
# tests start in subprocesses hold no examples, and importing them needs what they test (torchrec, for some).
collect_ignore_glob = ["scripts/*"]

# Under pytest-xdist every worker is a process of its own: two workers of two intra-op threads each on a 2-core
# machine would thrash (the tests' models are small; the scripts they start run on one thread already).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

#: The scenario groups (tests/scripts/scenario_groups.py) that the selected tests read.
_WANTED_GROUPS = pytest.StashKey[list]()


def _groups_of(item) -> tuple[str, ...]:
    mark = item.get_closest_marker("scenario_groups")
    return tuple(mark.args) if mark else ()


def pytest_collection_modifyitems(session, config, items):
    """The tests that read scenario groups go last: their groups run in the background from the session's first
    test on (``_groups_in_the_background``), beside the other tests, and are done by the time they are read."""
    from ddp_helpers import GROUPS  # in the order they start: the longest first

    wanted = {name for item in items for name in _groups_of(item)}
    config.stash[_WANTED_GROUPS] = [name for name in GROUPS if name in wanted]
    items[:] = [item for item in items if not _groups_of(item)] + [item for item in items if _groups_of(item)]


def _xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


@pytest.fixture(scope="session")
def _group_runner(tmp_path_factory, request):
    from ddp_helpers import GroupRuns

    # One folder for the whole session: under pytest-xdist, the workers' common base folder.
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if _xdist_worker(request.config) else base) / "scenario_groups"
    root.mkdir(exist_ok=True)
    runs = GroupRuns(root)
    yield runs
    # Under pytest-xdist another worker may still read the groups this one runs: let them end, unless the session
    # is being stopped (-x, an interrupt).
    session = request.session
    runs.close(wait=_xdist_worker(request.config) and not (session.shouldstop or session.shouldfail))


@pytest.fixture(scope="session", autouse=True)
def _groups_in_the_background(request):
    """The scenario groups the selected tests read start with the session's first test, in the background, in the
    first process of the session to claim them (a plain run's, or one pytest-xdist worker's); the other tests run
    meanwhile, on one intra-op thread (the groups' processes take the other core)."""
    wanted = request.config.stash.get(_WANTED_GROUPS, [])
    if wanted:
        torch.set_num_threads(1)
        request.getfixturevalue("_group_runner").claim(wanted)


@pytest.fixture
def group_runs(request, _group_runner):
    """``group_runs(name)``: the :class:`ddp_helpers.GroupResult` of scenario group ``name``, once it has ended; the
    test names the groups it reads in its mark, ``@pytest.mark.scenario_groups("ddp", "single")``."""
    declared = _groups_of(request.node)

    def result(name: str):
        if name not in declared:
            pytest.fail(f"{request.node.name} reads scenario group {name!r}: name it in its scenario_groups mark")
        return _group_runner.result(name)

    return result


@pytest.fixture
def data_root() -> Path:
    from demo_models.data.paths import data_root

    return data_root()


@pytest.fixture
def one_thread():
    """Run the test on one intra-op thread, then restore the count (tiny models only lose to thread contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
