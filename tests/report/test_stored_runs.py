"""Runs written before the typed records still load: their reports rebuilt today hold the same numbers as the
reports written with them (``tests/data/stored_runs``, see its README)."""

import json
import math
from pathlib import Path

import pytest

from lightning_recanalysis.records import ConflictRecord, SpectrumRecord
from lightning_recanalysis.report import build_report, read_run

STORED = Path(__file__).resolve().parents[1] / "data" / "stored_runs"


def _differences(before, after, path=""):
    if isinstance(before, dict) and isinstance(after, dict):
        return ([f"{path}/{k}: missing" for k in before.keys() - after.keys()]
                + [f"{path}/{k}: new" for k in after.keys() - before.keys()]
                + [d for k in before.keys() & after.keys() for d in _differences(before[k], after[k], f"{path}/{k}")])
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in _differences(b, a, f"{path}[{i}]")]
    if isinstance(before, float) and isinstance(after, float) and math.isnan(before) and math.isnan(after):
        return []
    return [] if before == after else [f"{path}: {before!r} != {after!r}"]


@pytest.mark.parametrize("demo", ["dcnv2", "tin", "mmoe"])
def test_a_stored_run_rebuilds_its_report_with_the_same_numbers(demo, tmp_path):
    run = read_run(STORED / demo)
    assert not run.notes
    paths = build_report(run, tmp_path)
    before = json.loads((STORED / demo / "summary_before.json").read_text())["analyses"]
    after = json.loads(paths["summary"].read_text())["analyses"]
    assert before.keys() == after.keys()
    for namespace in before:
        assert _differences(before[namespace]["numbers"], after[namespace]["numbers"]) == [], namespace


def test_stored_records_read_as_typed_records():
    dcnv2 = read_run(STORED / "dcnv2").records["collapse"]
    assert all(isinstance(r, SpectrumRecord) for r in dcnv2)
    assert dcnv2[0].stage == "init" and dcnv2[-1].views["embedding.embedding"].fields["F7"].cardinality == 10_000
    conflict = read_run(STORED / "mmoe").records["conflict"][-1]
    assert isinstance(conflict, ConflictRecord)
    creative = conflict.views["embedding"].fields["creative"][("click", "purchase")]
    assert creative.cosine_mean < 0 and creative.probes is None  # written before the probe count was kept
    # Published again, the record is the dict it was read from.
    published = conflict.to_dict()
    assert ConflictRecord.from_dict(published).to_dict() == published
