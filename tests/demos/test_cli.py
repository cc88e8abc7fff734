"""The demo runner: a second run into the same directory replaces the first (a fresh fit, not a resume); the
references of an earlier call are found, or the missing ones named."""

import pytest

from demo_models.__main__ import run
from demo_models.references import existing_references
from lightning_recanalysis.report.run_data import read_run


def test_a_second_demo_run_replaces_the_first(tmp_path):
    neighbour = tmp_path / "shared_bottom-synthetic" / "no-monitors"  # another run's directory, left alone
    neighbour.mkdir(parents=True)
    (neighbour / "keep.txt").write_text("not this run's")
    # 50,000 rows: what matters is the directory, not the demo's full 200,000-row data.
    first = run("shared_bottom", None, 2, tmp_path, 0, True, quiet=True, n_samples=50_000)
    (first / "stale.txt").write_text("left by the first run")
    second = run("shared_bottom", None, 1, tmp_path, 0, True, quiet=True, n_samples=50_000)
    assert second == first
    assert len(list(second.glob("events.out.tfevents.*"))) == 1 and not (second / "stale.txt").exists()
    assert (neighbour / "keep.txt").exists()
    # The report rebuilt from the event files sees the second run's one epoch, not the first run's two.
    epochs = {r["epoch"] for r in read_run(second).records["entanglement"]}
    assert epochs == {0}


def test_references_of_an_earlier_call_are_found_or_named_as_missing(tmp_path):
    with pytest.raises(SystemExit, match="reference_click-synthetic/single-task"):
        existing_references("synthetic", tmp_path)  # nothing trained there
    for task in ("click", "purchase"):  # what an earlier call leaves: a checkpoint under each run directory
        checkpoints = tmp_path / f"reference_{task}-synthetic" / "single-task" / "checkpoints"
        checkpoints.mkdir(parents=True)
        (checkpoints / "epoch=0-step=1.ckpt").write_bytes(b"")
    found = existing_references("synthetic", tmp_path)
    assert found == {t: tmp_path / f"reference_{t}-synthetic" / "single-task" for t in ("click", "purchase")}
