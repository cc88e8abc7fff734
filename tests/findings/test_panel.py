"""The findings panel (issue 24): no alarm on planted healthy models, the planted alarm on sick ones.

Each case of :mod:`benchmarks.findings_panel` is trained once per seed (a fraction of a second each, cached for
the tests below). Every case's premise is measured by hand in the run (numpy IA, autograd cosines, counted MI)
and checked before its alarms are: a case whose premise fails says nothing about the findings.
``python -m benchmarks.bench_findings_panel`` prints the same panel as a table.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.findings_panel import CASES, SEEDS, alarms, numpy_information_abundance, quiet_lightning, run_case

pytestmark = pytest.mark.slow

ALL = [(key, seed) for key in CASES for seed in SEEDS]
HEALTHY = [(key, seed) for key, seed in ALL if CASES[key].healthy]
SICK = [(key, seed) for key, seed in ALL if not CASES[key].healthy]
SPARED = [(key, seed) for key, seed in SICK if CASES[key].healthy_subjects]


def _ids(params):
    return [f"{CASES[key].number}-{key}-seed{seed}" for key, seed in params]


@pytest.fixture(scope="module", autouse=True)
def _one_quiet_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    quiet_lightning()
    yield
    torch.set_num_threads(before)


@functools.cache
def _run(key: str, seed: int):
    return run_case(CASES[key], seed)


def _premise_holds(run) -> None:
    assert run.premise.ok, (f"case {run.case.number} {run.case.key} seed {run.seed}: premise fails "
                            f"({'; '.join(run.premise.failed)}); measured {run.premise.numbers}")


@pytest.mark.parametrize(("key", "seed"), ALL, ids=_ids(ALL))
def test_premise_holds_by_measurement(key, seed):
    _premise_holds(_run(key, seed))


@pytest.mark.parametrize(("key", "seed"), HEALTHY, ids=_ids(HEALTHY))
def test_healthy_case_raises_no_alarm(key, seed):
    run = _run(key, seed)
    _premise_holds(run)
    assert not run.alarms, run.describe()


@pytest.mark.parametrize(("key", "seed"), SICK, ids=_ids(SICK))
def test_sick_case_raises_its_alarm(key, seed):
    run = _run(key, seed)
    _premise_holds(run)
    assert not run.misses, run.describe()


@pytest.mark.parametrize(("key", "seed"), SPARED, ids=_ids(SPARED))
def test_sick_case_spares_its_healthy_fields(key, seed):
    """A sick case's healthy fields (premise: numpy IA >= 0.6 of the bound) get no alarm of its kinds."""
    run = _run(key, seed)
    _premise_holds(run)
    assert not run.false_alarms, run.describe()


def test_a_case_is_deterministic_per_seed():
    first, second = run_case(CASES["collapsed_partner_dcn"], 1), run_case(CASES["collapsed_partner_dcn"], 1)
    assert first.premise.numbers == second.premise.numbers
    assert [(f.kind, f.verdict, f.subject, f.text) for f in first.findings] == \
           [(f.kind, f.verdict, f.subject, f.text) for f in second.findings]


def test_alarms_are_the_problem_findings():
    from lightning_recanalysis.findings import Finding

    found = [Finding("collapse", "collapse", "problem", "t/a", "a"), Finding("collapse", "bounded", "fine", "t/b", "b"),
             Finding("conflict", "conflict", "inconclusive", "t/c", "c")]
    assert [f.subject for f in alarms(SimpleNamespace(findings=found))] == ["t/a"]


def test_numpy_information_abundance_of_known_spectra():
    ia, rank = numpy_information_abundance(np.diag([1.0, 1.0, 1.0, 1.0]))
    assert (round(ia, 9), rank) == (4.0, 4)
    rows = np.random.default_rng(0).normal(size=(50, 2)) @ np.random.default_rng(1).normal(size=(2, 16))
    ia, rank = numpy_information_abundance(rows)
    assert rank == 2 and 1.0 < ia <= 2.0
