"""The conflict subsets in the report and in ``compare``: hand-written records with known shares give the
agreements derived by hand, the authors' figure per view, findings that name the numbers, a valid summary.json."""

import json

import jsonschema

from lightning_recanalysis.report import build_report, compare_runs
from lightning_recanalysis.report.render import summary_schema
from lightning_recanalysis.report.run_data import RunData

MODES = ("a_far_b_near", "b_far_a_near")


def view_part(top_a, bottom_a, top_b, bottom_b):
    """A view whose shares on mode a_far_b_near are (top_a, bottom_a) and on b_far_a_near (top_b, bottom_b)."""
    edges = [0.1 * k for k in range(40)]
    modes = {}
    for mode, (top, bottom) in zip(MODES, ((top_a, bottom_a), (top_b, bottom_b))):
        far, near = ("a", "b") if mode == MODES[0] else ("b", "a")
        modes[mode] = {"conflict": [1] * 39, "rest": [k % 5 for k in range(39)],
                       "shares": {"top": top, "middle": 1 - top - bottom, "bottom": bottom},
                       "agreement": {far: top - bottom, near: bottom - top}}
    return {"edges": edges, "low": 1.5, "high": 2.5, "modes": modes, "rank_correlation": {"a": 0.1, "b": -0.1}}


def run(name, views):
    part = {"tasks": ["a", "b"], "high": 60.0, "low": 40.0, "bins": 39, "frequent_only": False,
            "validation_pairs": 100, "pairs": 100, "references": {"a": "ref_a", "b": "ref_b"},
            "modes": {m: {"far": m[0], "near": m[-6], "pairs": 39} for m in MODES}, "views": views}
    record = {"stage": "validation", "epoch": 1, "step": 40, "tasks": ["a", "b"], "views": list(views),
              "world_size": 1, "histograms": {}, "metrics": {"entanglement/pairs": 100.0}, "conflict": part}
    return RunData(name=name, path=name, records={"entanglement": [record]},
                   scalars={"entanglement/pairs": [(40, 100.0)]})


SHARED = run("mmoe", {"emb": view_part(0.5, 0.3, 0.4, 0.4)})  # agreement with a: (0.2 + 0.0) / 2 = 0.1
CHUNKS = run("stem", {"emb[a]": view_part(0.7, 0.1, 0.2, 0.6),  # with a: (0.6 + 0.4) / 2 = 0.5
                      "emb[b]": view_part(0.2, 0.5, 0.6, 0.2),  # with b: (0.3 + 0.4) / 2 = 0.35
                      "emb[shared]": view_part(0.4, 0.4, 0.4, 0.4)})


def test_report_section_of_the_conflict_subsets(tmp_path):
    paths = build_report(CHUNKS, tmp_path)
    data = json.loads(paths["summary"].read_text())
    jsonschema.validate(data, summary_schema())
    section = data["analyses"]["entanglement"]
    assert section["numbers"]["conflict"]["agreement"]["emb[a]"]["a"] == 0.5
    assert abs(section["numbers"]["conflict"]["agreement"]["emb[b]"]["b"] - 0.35) < 1e-12
    assert [f["file"] for f in section["figures"]] == [f"figures/entanglement_emb_{v}_conflict_subsets.png"
                                                       for v in ("a", "b", "shared")]
    assert any("`emb[a]` reproduces its own task's" in f and "+0.50 with a" in f and "70% of the a far b near" in f
               for f in (f["text"] for f in section["findings"]))


def test_compare_shows_chunks_against_shared_embedding(tmp_path):
    paths = compare_runs([SHARED, CHUNKS], tmp_path)
    data = json.loads(paths["summary"].read_text())
    section = data["analyses"]["entanglement"]
    numbers = section["numbers"]["conflict"]
    assert numbers["mmoe"]["own_task_agreement"] == {"a": 0.1, "b": -0.1}
    assert numbers["stem"]["serving_views"] == {"a": "emb[a]", "b": "emb[b]"}
    assert any(f.startswith("**stem** reproduces both single-task geometries better than **mmoe**")
               and "+0.35 against -0.10" in f for f in (f["text"] for f in section["findings"]))
    assert len([f for f in section["figures"] if f["file"].endswith("_conflict_subsets.png")]) == 4
    assert (tmp_path / "figures" / "compare_mmoe_emb_conflict_subsets.png").exists()
