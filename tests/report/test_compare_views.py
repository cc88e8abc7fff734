"""``compare`` lines runs up by analysis, view and field: the same fields under other table names (concatenated vs
one table per feature, MMoE's shared table vs STEM's shared chunk), every number beside its difference, and the
runs' validation metrics in a table of their own."""

import json

import pytest

from lightning_recanalysis.records import (ConflictRecord, ConflictView, FieldSpectrum, PairStatistics,
                                           SpectrumRecord, SpectrumView)
from lightning_recanalysis.report import RunData, compare_runs
from lightning_recanalysis.report.compare_views import match_views, run_labels, value_cells

FIELDS = [f"F{k}" for k in range(8)]
CARDINALITY = [4, 12, 40, 100, 300, 1000, 3000, 10000]


def _spectrum_run(name, view, ia, order=FIELDS):
    fields = {f: FieldSpectrum(cardinality=CARDINALITY[FIELDS.index(f)], information_abundance=ia[FIELDS.index(f)],
                               effective_rank=2 * ia[FIELDS.index(f)]) for f in order}
    record = SpectrumRecord(stage="epoch", epoch=7, step=1400,
                            views={view: SpectrumView(width=16, table=view, group="all", fields=fields)})
    scalars = {"val/auroc": [(1400, 0.84 if "per_feature" not in name else 0.85)],
               "val/loss": [(1400, 0.57)], "train/loss": [(1400, 0.5)]}
    return RunData(f"{name}/monitors", f"runs/{name}/monitors", records={"collapse": [record]}, scalars=scalars)


def test_concatenated_and_per_feature_tables_line_up_field_by_field(tmp_path):
    concatenated = _spectrum_run("dcnv2", "embedding.embedding", [2.5 + k for k in range(8)])
    per_feature = _spectrum_run("dcnv2_per_feature", "embedding_dict", [3.0 + k for k in range(8)],
                                order=list(reversed(FIELDS)))  # another table order: matched by name all the same
    data = json.loads(compare_runs([concatenated, per_feature], tmp_path)["summary"].read_text())
    section = data["analyses"]["collapse"]
    ia = next(t for t in section["tables"] if t["title"].startswith("Information abundance per field"))
    assert "`embedding.embedding` (dcnv2) = `embedding_dict` (dcnv2_per_feature)" in ia["title"]
    assert ia["headers"] == ["field", "cardinality", "dcnv2", "dcnv2_per_feature", "difference"]
    assert [row[0] for row in ia["rows"]] == FIELDS  # all 8 fields, by cardinality
    assert ia["rows"][0] == ["F0", 4, "2.500", "3.000", "+0.500"]
    assert all(row[4] == "+0.500" for row in ia["rows"])
    assert any("matched by their 8 field names" in note for note in section["notes"])
    assert "difference: dcnv2_per_feature minus dcnv2." in section["notes"]
    assert any(f["file"].endswith("_ia.png") for f in section["figures"])
    validation = data["analyses"]["validation"]["tables"][0]
    assert validation["rows"] == [["val/auroc", "0.8400", "0.8500", "+0.0100"],
                                  ["val/loss", "0.5700", "0.5700", "+0.0000"]]


def _conflict_run(name, views):
    record = ConflictRecord(stage="train", epoch=3, step=40, tasks=["click", "purchase"], measured_steps=8,
                            views=views)
    return RunData(f"{name}/monitors", f"runs/{name}/monitors", records={"conflict": [record]})


def _view(cosines):
    pair = ("click", "purchase")
    return ConflictView(pairs={pair: PairStatistics(cosines[0], 0.5, probes=8)},
                        fields={f: {pair: PairStatistics(c, 0.25, probes=8)} for f, c in zip(["user_id", "creative"],
                                                                                             cosines[1:])})


def test_mmoe_against_stem_compares_every_field_and_task_pair(tmp_path):
    mmoe = _conflict_run("mmoe", {"embedding": _view([0.2, 0.36, -0.22])})
    nothing = PairStatistics()  # a task chunk: one task's gradient only, no cosine
    chunk = ConflictView(pairs={("click", "purchase"): nothing},
                         fields={"user_id": {("click", "purchase"): nothing}})
    stem = _conflict_run("stem", {"embedding[click]": chunk, "embedding[shared]": _view([-0.14, -0.03, -0.24])})
    data = json.loads(compare_runs([mmoe, stem], tmp_path)["summary"].read_text())
    section = data["analyses"]["conflict"]
    cosines = next(t for t in section["tables"] if t["title"].startswith("Mean gradient cosine"))
    assert "`embedding` (mmoe) = `embedding[shared]` (stem)" in cosines["title"]
    assert cosines["rows"] == [["(whole view)", "click vs purchase", "0.200", "-0.140", "-0.340"],
                               ["user_id", "click vs purchase", "0.360", "-0.030", "-0.390"],
                               ["creative", "click vs purchase", "-0.220", "-0.240", "-0.020"]]
    assert any("stem: embedding[click] has no gradient cosine" in n for n in section["notes"])
    assert any(f["file"] == "figures/compare_embedding_cosines.png" for f in section["figures"])


def test_views_of_the_same_name_match_first_and_others_by_shared_fields():
    matches = match_views({"a": {"emb": ["u", "i"], "hist": ["h"]}, "b": {"other": ["h"], "emb": ["u", "i", "c"]}})
    assert [(m.views, m.fields) for m in matches] == [({"a": "emb", "b": "emb"}, ["u", "i", "c"]),
                                                      ({"a": "hist", "b": "other"}, ["h"])]
    assert matches[0].how == "" and matches[1].how == "matched by their 1 field names"
    lonely = match_views({"a": {"emb": ["u"]}, "b": {"x": ["q"]}})
    assert [m.views for m in lonely] == [{"a": "emb"}, {"b": "x"}]  # nothing shared: no match, each on its own


@pytest.mark.parametrize("values, cells", [([1.0, None], ["1.000", "-", "-"]), ([None, 2.0], ["-", "2.000", "-"]),
                                           ([0.5, 0.75, 0.25], ["0.500", "0.750", "0.250", "+0.250", "-0.250"])])
def test_value_cells_hold_each_run_then_the_differences(values, cells):
    assert value_cells(values) == cells


def test_run_labels_drop_a_shared_last_part_only_when_names_stay_apart():
    assert run_labels(["x/monitors", "y/monitors"]) == ["x", "y"]
    assert run_labels(["runs/a/monitors", "other/a/monitors"]) == ["runs/a", "other/a"]
    assert run_labels(["x", "y"]) == ["x", "y"]
