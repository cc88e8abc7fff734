"""Lightning's ModelParallelStrategy on 2 CPU processes (gloo): FSDP2 row shards and tensor-parallel column shards
of the embedding table. Every number the monitors log equals what one process computes from the same (gathered)
weights, every rank logs the same, and the monitors leave the trained weights bit for bit as they were.

The runs are the scenarios of tests/scripts/model_parallel.py, model_parallel_demos.py and model_parallel_faults.py
in the scenario groups of tests/scripts/scenario_groups.py: the sharded ones in ``model_parallel`` (2 processes) and
``fsdp_tp`` (4), their references in ``ddp`` and ``single``."""

import json
import sys

import numpy as np
import pytest
import torch

from ddp_helpers import SCRIPTS, other_ranks_exit_codes

sys.path.insert(0, str(SCRIPTS))
from model_parallel import DIM, ShardedDCN, monitors  # noqa: E402

from lightning_recanalysis.functional.field_pair import cross_layer_pair_strength  # noqa: E402

#: Where each mode of tests/scripts/model_parallel.py runs: (scenario group, scenario label).
RUNS = {"fsdp": ("model_parallel", "fsdp"), "tp": ("model_parallel", "tp"), "fsdp_tp": ("fsdp_tp", "fsdp_tp"),
        "ddp": ("ddp", "model_parallel"), "single": ("single", "model_parallel")}


def _scenario(group_runs, group: str, label: str, processes: int):
    """The folder of one scenario, after checking that its group ended well (every one of its ranks)."""
    run = group_runs(group)
    assert run.returncode == 0, run.stderr[-3000:]
    if processes > 1:
        assert other_ranks_exit_codes(run.out) == [0] * (processes - 1)
    return run.out / label


def _numbers(value, path=""):
    """Every number in a record, by its path, so two records compare number by number."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def _single_process_records(weights: list[dict[str, torch.Tensor]]) -> dict[str, list[dict]]:
    """Each analysis again, in this process, on a plain model holding the gathered weights of that moment."""
    records: list[dict] = []
    for snapshot in weights:
        model = ShardedDCN("none")
        model.load_state_dict(snapshot, strict=False)
        monitor = monitors()[0]
        monitor.setup(None, model, "fit")
        records.append(monitor.analyse())
    return records


def _assert_numbers_equal(logged: dict, expected: dict, what: str) -> None:
    got, want = dict(_numbers(logged)), dict(_numbers(expected))
    assert set(want) <= set(got), (what, sorted(set(want) - set(got))[:5])
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (what, key)


@pytest.mark.slow
@pytest.mark.parametrize("mode,placement,data_parallel", [
    pytest.param("fsdp", "S(0)", "ddp", marks=pytest.mark.scenario_groups("model_parallel", "ddp")),
    pytest.param("tp", "S(1)", "single", marks=pytest.mark.scenario_groups("model_parallel", "single")),
    pytest.param("fsdp_tp", "S(0)", "ddp", marks=pytest.mark.scenario_groups("fsdp_tp", "ddp"))])
def test_every_logged_number_equals_one_process_on_the_same_weights(group_runs, mode, placement, data_parallel):
    """Weights: each record recomputed in one process from the weights gathered at that moment. Data: the counts
    of a plain run that feeds the processes the same batches (DDP for FSDP2's two data-parallel ranks; one
    process for two tensor-parallel ranks, which both see every batch and must count it once). ``fsdp_tp``:
    Lightning's recipe on 4 processes (data-parallel 2 x tensor-parallel 2), the table fully_shard-ed on the
    data-parallel dimension only, so each tensor-parallel coordinate holds its own row-sharded copy."""
    world = 4 if mode == "fsdp_tp" else 2
    sharded, plain = (_scenario(group_runs, *RUNS[run_mode], processes)
                      for run_mode, processes in ((mode, world), (data_parallel, 2 if data_parallel == "ddp" else 1)))
    assert json.loads((sharded / "monitors_placements_rank0.json").read_text())["embedding.weight"] == [placement]
    histories = [json.loads((sharded / f"monitors_history_rank{r}.json").read_text()) for r in range(world)]
    assert all(history == histories[0] for history in histories)
    weights = torch.load(sharded / "monitors_weights.pt", weights_only=True)
    spectra = histories[0]["EmbeddingSpectrumMonitor"]
    assert [r["stage"] for r in spectra] == ["init", "epoch", "epoch"]
    for logged, recomputed in zip(spectra, _single_process_records(weights), strict=True):
        _assert_numbers_equal(logged, recomputed, f"spectrum {logged['stage']} {logged['epoch']}")
    reference = json.loads((plain / f"monitors_{data_parallel}_history_rank0.json").read_text())
    pairs = histories[0]["FieldPairCorrelationMonitor"]
    assert [r["epoch"] for r in pairs] == [0, 1]
    for logged, plain, snapshot in zip(pairs, reference["FieldPairCorrelationMonitor"], weights[1:], strict=True):
        assert logged["samples"] == plain["samples"] == 2048
        data_only = {k: v for k, v in plain.items() if k not in ("learned", "agreement", "agreement_interaction", "step")}
        _assert_numbers_equal(logged, data_only, f"field-pair ground truth, epoch {logged['epoch']}")
        learned = cross_layer_pair_strength(snapshot["cross.weight"], 3, DIM)
        _assert_numbers_equal({"learned": logged["learned"]}, {"learned": learned.tolist()}, "learned strength")


DEMO_TABLES = (("tin", ["FeatureCorrelationMonitor"], "category_embedding.weight"),
               ("stem", ["GradientConflictMonitor", "EntanglementMonitor"], "embedding.weight"),
               ("dcnv2_per_feature", ["EmbeddingSpectrumMonitor", "FieldPairCorrelationMonitor"],
                "embedding_dict.F0.weight"))


def _check_demo_runs(group_runs, sharded_mode: str, reference_mode: str, placement: str, check_record) -> dict:
    """TIN, STEM and the per-feature DCNv2 sharded (with and without monitors: the ``demos_<mode>`` and
    ``demos_<mode>_plain`` scenarios of the ``model_parallel`` group) and as the reference (the
    ``model_parallel_demos`` scenario of the reference's group); for each model: the table has ``placement``, both
    runs train to the same weights, each monitor keeps as many records as the reference's (``check_record(model,
    name, logged, expected)`` compares each pair), and the monitors leave the sharded training unchanged. Returns
    the sharded runs' records by model."""
    reference_processes = 2 if reference_mode == "ddp" else 1
    with_monitors = _scenario(group_runs, "model_parallel", f"demos_{sharded_mode}", 2)
    without = _scenario(group_runs, "model_parallel", f"demos_{sharded_mode}_plain", 2)
    reference = _scenario(group_runs, reference_mode, "model_parallel_demos", reference_processes)
    records = {}
    for model, monitor_names, table in DEMO_TABLES:
        placements = json.loads((with_monitors / f"{model}_{sharded_mode}_monitors_placements.json").read_text())
        assert placements[table] == [placement]
        sharded = json.loads((with_monitors / f"{model}_{sharded_mode}_monitors.json").read_text())
        plain = json.loads((reference / f"{model}_{reference_mode}_monitors.json").read_text())
        assert sorted(sharded) == sorted(plain) == sorted(monitor_names)
        # The runs train alike: the same weights, so the monitors read the same model.
        sharded_weights = torch.load(with_monitors / f"{model}_{sharded_mode}_monitors.pt", weights_only=True)
        reference_weights = torch.load(reference / f"{model}_{reference_mode}_monitors.pt", weights_only=True)
        for name, value in reference_weights.items():
            assert torch.allclose(sharded_weights[name], value, rtol=1e-6, atol=1e-7), name
        for name in monitor_names:
            assert len(sharded[name]) == len(plain[name]) >= 2, name
            for logged, expected in zip(sharded[name], plain[name]):
                check_record(model, name, logged, expected)
        untouched = torch.load(without / f"{model}_{sharded_mode}_plain.pt", weights_only=True)
        for name, value in untouched.items():
            assert torch.equal(sharded_weights[name], value), (model, name)
        records[model] = sharded
    return records


@pytest.mark.slow
@pytest.mark.scenario_groups("model_parallel", "ddp")
def test_demo_models_under_fsdp2_log_what_ddp_logs(group_runs):
    """TIN (correlation: category and position tables looked up), STEM (gradient conflict and entanglement on
    task chunks of one table) and the per-feature DCNv2 (a field set of eight tables, a raw [L, D, D] cross kernel
    whose field order is found on the first batch) with every table sharded by rows: each record equals the DDP run's on the same rows
    (FSDP2 and DDP train to the same weights here, so every number, learned ones included, must agree), and the
    monitors leave FSDP2's training unchanged."""
    def check_record(model, name, logged, expected):
        assert logged["world_size" if "world_size" in logged else "stage"] == \
            expected["world_size" if "world_size" in expected else "stage"]
        _assert_numbers_equal(logged, expected, f"{model} {name} epoch {logged['epoch']}")

    _check_demo_runs(group_runs, "fsdp", "ddp", "Shard(dim=0)", check_record)


@pytest.mark.slow
@pytest.mark.scenario_groups("model_parallel", "single")
def test_demo_models_under_tensor_parallelism_log_what_one_process_logs(group_runs):
    """Every embedding table split by columns over two tensor-parallel processes (torch's ``ColwiseParallel``:
    the monitors' hooks see the ids as replicated DTensors), both training on every row: every monitor of TIN,
    STEM and the per-feature DCNv2 logs what one process logs on the same rows (the runs train to the same
    weights, checked), every analysis is present, and the monitors leave the training unchanged."""
    def check_record(model, name, logged, expected):
        assert logged.pop("world_size", 2) == 2 and expected.pop("world_size", 1) == 1
        _assert_numbers_equal(logged, expected, f"{model} {name} epoch {logged['epoch']}")
        assert set(dict(_numbers(logged))) == set(dict(_numbers(expected))), (model, name)

    records = _check_demo_runs(group_runs, "tp", "single", "Shard(dim=1)", check_record)
    for sharded in records.values():
        conflict = sharded.get("GradientConflictMonitor")
        if conflict:  # the probes measured: the analysis is there, not silently absent
            assert all(r["measured_steps"] > 0 and r["metrics"] for r in conflict)


@pytest.mark.slow
@pytest.mark.scenario_groups("model_parallel")
@pytest.mark.parametrize("scenario,problem", [("nan_task", "nonfinite:click"), ("missing_task", "missing:buy")])
def test_a_task_loss_unusable_on_one_rank_skips_the_probe_on_every_rank(group_runs, scenario, problem):
    """Under FSDP2 every probe's autograd.grad makes collectives: a task loss NaN or missing on rank 1 alone at
    batch 2 skips that probe on both ranks (no rank waits in a gradient all-gather), and every other probe
    measures: 8 batches on each of 2 ranks, so 2 x 7 measured and 2 x 1 skipped, the same record on both."""
    out = _scenario(group_runs, "model_parallel", scenario, 2)
    records = [json.loads((out / f"{scenario}_rank{r}.json").read_text())["GradientConflictMonitor"]
               for r in range(2)]
    for rank, (record,) in enumerate(records):
        assert (record["measured_steps"], record["skipped_steps"]) == (14, 2)
        assert record["problems"] == ({problem: 1} if rank == 1 else {})
        assert "conflict/embedding_dict/click_vs_buy/cosine_mean" in record["metrics"], sorted(record["metrics"])
    assert records[0][0]["metrics"] == records[1][0]["metrics"]


@pytest.mark.slow
@pytest.mark.scenario_groups("model_parallel")
def test_cross_layer_found_on_one_rank_only_is_every_rank_s(group_runs):
    """Rank 1 cannot read the cross layer's input on its first batch (planted), rank 0 reads it: both take rank
    0's layout, so neither raises while the other reads the FSDP2-sharded tables, and both record the same
    interaction matrix (initial and per epoch) and learned field-pair strength."""
    out = _scenario(group_runs, "model_parallel", "discovery", 2)
    histories = [json.loads((out / f"discovery_rank{r}.json").read_text()) for r in range(2)]
    assert histories[0] == histories[1]
    spectra = histories[0]["EmbeddingSpectrumMonitor"]
    assert [r["stage"] for r in spectra] == ["init", "epoch"]
    for record in spectra:
        assert record["interaction"]["fields"] == ["user", "item"]
        assert np.all(np.isfinite(record["interaction"]["matrix"]))
    assert "learned" in histories[0]["FieldPairCorrelationMonitor"][0]


@pytest.mark.slow
@pytest.mark.scenario_groups("model_parallel")
def test_a_spectrum_failing_on_one_rank_between_sharded_reads_is_skipped_on_every_rank(group_runs):
    """Rank 1's spectrum of the first of two FSDP2-sharded tables fails after epoch 0 (planted): every read of
    the sharded tables comes before the local spectra, so rank 0 does not wait in the second table's read; both
    ranks skip that epoch's record (one failure each), keep the same history, and analyse epoch 1 again."""
    out = _scenario(group_runs, "model_parallel", "spectrum_fault", 2)
    histories = [json.loads((out / f"spectrum_fault_rank{r}.json").read_text()) for r in range(2)]
    assert histories[0] == histories[1]
    assert histories[0]["failures"] == [1]
    assert [(r["stage"], r["epoch"]) for r in histories[0]["EmbeddingSpectrumMonitor"]] == [("init", 0), ("epoch", 1)]
