"""Lightning's ModelParallelStrategy on 2 CPU processes (gloo): FSDP2 row shards and tensor-parallel column shards
of the embedding table. Every number the monitors log equals what one process computes from the same (gathered)
weights, every rank logs the same, and the monitors leave the trained weights bit for bit as they were."""

import json
import sys
from pathlib import Path

import pytest
import torch

from ddp_helpers import other_ranks_exit_codes, run_ddp_script

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from model_parallel import ShardedDCN, monitors  # noqa: E402

SCRIPT = Path(__file__).parent / "scripts" / "model_parallel.py"


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
    records: dict[str, list[dict]] = {}
    for snapshot in weights:
        model = ShardedDCN("none")
        model.load_state_dict(snapshot, strict=False)
        for monitor in monitors():
            monitor.setup(None, model, "fit")
            records.setdefault(type(monitor).__name__, []).append(monitor.analyse())
    return records


@pytest.mark.slow
@pytest.mark.parametrize("mode,placement", [("fsdp", "S(0)"), ("tp", "S(1)")])
def test_every_logged_number_equals_one_process_on_the_same_weights(tmp_path, mode, placement):
    proc = run_ddp_script(SCRIPT, tmp_path, mode, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert other_ranks_exit_codes(tmp_path) == [0]
    assert json.loads((tmp_path / "monitors_placements_rank0.json").read_text())["embedding.weight"] == [placement]
    histories = [json.loads((tmp_path / f"monitors_history_rank{r}.json").read_text()) for r in range(2)]
    assert histories[0] == histories[1]
    expected = _single_process_records(torch.load(tmp_path / "monitors_weights.pt", weights_only=True))
    for name, history in histories[0].items():
        assert [r["stage"] for r in history] == ["init", "epoch", "epoch"]
        assert len(history) == len(expected[name])
        for logged, recomputed in zip(history, expected[name]):
            got, want = dict(_numbers(logged)), dict(_numbers(recomputed))
            assert set(want) <= set(got)
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, logged["stage"], key)


@pytest.mark.slow
def test_monitors_leave_the_sharded_training_unchanged(tmp_path):
    for flag in ([], ["--no-monitors"]):
        proc = run_ddp_script(SCRIPT, tmp_path, "fsdp", *flag, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with_monitors = torch.load(tmp_path / "monitors_weights.pt", weights_only=True)[-1]
    without = torch.load(tmp_path / "plain_weights.pt", weights_only=True)[-1]
    assert with_monitors.keys() == without.keys()
    for name in without:
        assert torch.equal(with_monitors[name], without[name]), name
