"""Every demo model with all its monitors and AnalysisReport, in one two-process CPU DDP run (gloo): no rank hangs,
every rank keeps the same records and logs the same keys, only rank 0 writes files, and the values that depend on
the data alone equal those of one process trained on the same rows.

Both runs come from tests/scripts/demo_ddp.py, started once for every demo model (importing torch and Lightning
in each process costs more than training a small model), in the ``ddp`` and ``single`` scenario groups
(tests/scripts/scenario_groups.py). There, rank r of 2 takes rows r, r + 2, ... in order,
with half the batch of the single process, so step k of the DDP run covers the same rows as step k of the single
run, and each epoch covers every row exactly once (the row counts divide evenly: no padding, no repeats).
"""

import json
from collections import Counter
from pathlib import Path

import pytest

from ddp_helpers import canonical, other_ranks_exit_codes
from demo_models.registry import MODELS

# Training steps per epoch (the same on each of 2 ranks as in one process) and rows per epoch: 2304 training
# rows in batches of 256 for the single-task demos, 2048 for the multi-task ones (demo_ddp.N_SAMPLES, BATCH).
SINGLE_TASK, MULTI_TASK = (9, 2304), (8, 2048)
VALIDATION_ROWS = 512  # multi-task demos: 20% of 2560 rows

#: The monitors each builder attaches, with the (stage, epoch, step) of their records over two epochs.
EXPECTED = {
    "dcnv2": {"EmbeddingSpectrumMonitor": [("init", 0, 0), ("epoch", 0, 9), ("epoch", 1, 18)],
              "FieldPairCorrelationMonitor": [("epoch", 0, 9), ("epoch", 1, 18)]},
    "dcnv2_per_feature": {"EmbeddingSpectrumMonitor": [("init", 0, 0), ("epoch", 0, 9), ("epoch", 1, 18)],
                          "FieldPairCorrelationMonitor": [("epoch", 0, 9), ("epoch", 1, 18)]},
    "din": {"FeatureCorrelationMonitor": [("epoch", 0, 9), ("epoch", 1, 18)]},
    "tin": {"FeatureCorrelationMonitor": [("epoch", 0, 9), ("epoch", 1, 18)]},
    **{model: {"GradientConflictMonitor": [("train", 0, 8), ("train", 1, 16)],
               "EntanglementMonitor": [("validation", 0, 8), ("validation", 1, 16)]}
       for model in ("shared_bottom", "mmoe", "ple", "stem")},
}
NAMESPACES = {"EmbeddingSpectrumMonitor": "collapse/", "FieldPairCorrelationMonitor": "correlation/field_pair/",
              "FeatureCorrelationMonitor": "correlation/", "GradientConflictMonitor": "conflict/",
              "EntanglementMonitor": "entanglement/"}


@pytest.fixture
def runs(group_runs):
    """(folder, run) of every demo model on 2 DDP processes and on one (each group's ``demos`` scenario)."""
    results = {}
    for name in ("ddp", "single"):
        run = group_runs(name)
        results[name] = (run.out / "demos", run)
    return results


def _load(folder: Path, model: str, rank: int) -> dict:
    return json.loads((folder / model / f"rank{rank}.json").read_text())


def _written_files(folder: Path) -> Counter:
    """The files a run wrote under one model's folder, event files by kind (their names hold host and pid), the
    script's own dumps left out; a Counter, so that a second event file would show."""
    names = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("rank")]
    return Counter("events.out.tfevents" if "events.out.tfevents" in n else n for n in names)


# ---- the values that must equal one process's, per monitor --------------------------------------------------
def _spectrum(ddp: list, one: list) -> None:
    # Same seed, so the same initial weights in every process, analysed at fit start before any step: the
    # baseline record is one process's, bit for bit. (Later records read weights trained on half-batch
    # gradients averaged over ranks, equal to one process's only up to rounding: not compared.)
    assert canonical(ddp[0]) == canonical(one[0])


def _field_pair(ddp: list, one: list) -> None:
    # The counts are sums over the ranks' shards, which together are one process's rows; the warm-up that picks
    # each field's kept values holds the first 8 steps, the same rows in both runs. Same integer tables, same
    # arithmetic: the ground truth is one process's exactly. (The learned strength reads trained weights.)
    for d, o in zip(ddp, one):
        assert d["samples"] == o["samples"] == SINGLE_TASK[1]
        for key in ("fields", "bias_correction", "other_fraction", "field_mutual_information", "mutual_information",
                    "interaction_information"):
            assert canonical(d[key]) == canonical(o[key]), key


def _correlation(ddp: list, one: list) -> None:
    # As for field pairs: the counts of both ranks are summed, so the ground-truth maps are one process's
    # (count_epochs=1: epoch 1 shows the counts of epoch 0 again). The learned maps read trained weights.
    for d, o in zip(ddp, one):
        assert d["samples"] == o["samples"] == SINGLE_TASK[1]
        for key in ("positive_rate", "same_category_positions", "same_category_mi"):
            assert canonical(d[key]) == canonical(o[key]), key
        assert len(d["targets"]) == len(o["targets"]) == 2
        for a, b in zip(d["targets"], o["targets"]):
            for key in ("target_category", "samples", "behavior_categories", "ground_truth_mi", "ground_truth"):
                assert canonical(a[key]) == canonical(b[key]), key


def _conflict(ddp: list, one: list) -> None:
    # Each rank probes its own half of every probed batch (indices 0, 2, 4, 6 of 8), so no cosine is one
    # process's (it is measured on half-batch gradients); what must hold is that the pooled statistics count
    # the probes of both ranks.
    for d, o in zip(ddp, one):
        assert (d["world_size"], o["world_size"]) == (2, 1)
        assert o["measured_steps"] == 4 and d["measured_steps"] == 2 * 4
        assert d["skipped_steps"] == o["skipped_steps"] == 0


def _entanglement(ddp: list, one: list) -> None:
    # The pairs of both ranks' validation shards are gathered: the whole validation set, as in one process. The
    # pair counts of every label subset depend on the labels alone and match exactly; distances and AUROCs read
    # the trained weights and scores (not compared).
    for d, o in zip(ddp, one):
        pairs = {k: v for k, v in d["metrics"].items() if k.endswith("/pairs")}
        assert pairs == {k: v for k, v in o["metrics"].items() if k.endswith("/pairs")}
        assert pairs["entanglement/pairs"] == VALIDATION_ROWS and len(pairs) == 5  # all, and 4 label patterns


CHECKS = {"EmbeddingSpectrumMonitor": _spectrum, "FieldPairCorrelationMonitor": _field_pair,
          "FeatureCorrelationMonitor": _correlation, "GradientConflictMonitor": _conflict,
          "EntanglementMonitor": _entanglement}


@pytest.mark.slow
@pytest.mark.scenario_groups("ddp", "single")
@pytest.mark.parametrize("model", list(MODELS))
def test_demo_model_in_two_process_ddp(runs, model):
    (ddp_dir, ddp), (single_dir, single) = runs["ddp"], runs["single"]
    # No hang (the run ended within its limit) and both ranks exited cleanly.
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert other_ranks_exit_codes(ddp_dir.parent) == [0]
    assert single.returncode == 0, single.stderr[-3000:]
    rank0, rank1 = _load(ddp_dir, model, 0), _load(ddp_dir, model, 1)
    one = _load(single_dir, model, 0)

    steps, _ = SINGLE_TASK if model in ("dcnv2", "dcnv2_per_feature", "din", "tin") else MULTI_TASK
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["train_batches_per_rank"] == one["train_batches_per_rank"] == steps
    assert rank0["global_step"] == rank1["global_step"] == one["global_step"] == 2 * steps

    # The same records on every rank: same keys, stages and epochs, and the same numbers (counts synced,
    # statistics pooled, weights replicated).
    assert set(rank0["monitors"]) == set(rank1["monitors"]) == set(EXPECTED[model])
    for name, shape in EXPECTED[model].items():
        h0, h1 = rank0["monitors"][name]["history"], rank1["monitors"][name]["history"]
        assert [(r["stage"], r["epoch"], r["step"]) for r in h0] == shape, name
        assert [(r["stage"], r["epoch"], r["step"]) for r in h1] == shape, name
        assert [sorted(r) for r in h0] == [sorted(r) for r in h1], name
        assert canonical(h0) == canonical(h1), name
        assert rank0["monitors"][name]["failures"] == rank1["monitors"][name]["failures"] == 0
        CHECKS[name](h0, one["monitors"][name]["history"])

    # The same metric keys on every rank, and the same as one process logs (the tags depend on the model and
    # the data, not on how the rows are split); every monitor logged some.
    assert rank0["logged_keys"] == rank1["logged_keys"] == one["logged_keys"]
    for name in EXPECTED[model]:
        assert any(k.startswith(NAMESPACES[name]) for k in rank0["logged_keys"]), name

    # Only rank 0 writes: rank 1's AnalysisReport wrote nothing, and the DDP run left exactly the files of the
    # single-process run (one event file, the report, the hyperparameters).
    assert rank1["report_files"] == []
    report = {f"{model}/version_0/report.html", f"{model}/version_0/summary.json"}
    assert report <= set(rank0["report_files"]) and all((ddp_dir / f).is_file() for f in report)
    written = _written_files(ddp_dir / model)
    assert written["events.out.tfevents"] == 1
    assert written == _written_files(single_dir / model)
