"""GradientConflictMonitor in real fits: known gradients, STEM-style chunks, bad input, protocol errors, resume."""

import warnings

import numpy as np
import pytest

from helpers import read_events
from multitask_helpers import (
    KNOWN_FIELDS,
    KnownChunks,
    KnownGradients,
    KnownGradientsPerFeature,
    known_batches,
    known_loader,
    numpy_table_cosine,
    quiet_trainer,
)

from lightning_recanalysis import GradientConflictMonitor


# These models are tiny: more intra-op threads only add contention on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_known_gradients_orthogonal_opposite_and_table_level(tmp_path):
    monitor = GradientConflictMonitor(every_n_steps=2, field_dims=KNOWN_FIELDS, strict=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[monitor])
    trainer.fit(KnownGradients(), known_loader(n_batches=6))
    assert [(r["stage"], r["epoch"], r["measured_steps"]) for r in monitor.history] == [("train", 0, 3), ("train", 1, 3)]
    m = monitor.history[-1]["metrics"]
    record = monitor.records[-1]  # the typed record is the published one
    assert (record.stage, record.tasks, record.measured_steps, record.metrics) == ("train", ["a", "b"], 3, m)
    assert m["conflict/embedding/f0/a_vs_b/cosine_mean"] == 0.0  # orthogonal
    assert m["conflict/embedding/f0/a_vs_b/negative_fraction"] == 0.0
    assert m["conflict/embedding/f0/a_vs_b/norm_ratio"] == pytest.approx(1.0, abs=1e-12)  # ||U|| = ||U_PERP||
    assert m["conflict/embedding/f1/a_vs_b/cosine_mean"] == pytest.approx(-1.0, abs=1e-12)  # opposite
    assert m["conflict/embedding/f1/a_vs_b/negative_fraction"] == 1.0
    assert m["conflict/embedding/f1/a_vs_b/norm_ratio"] == pytest.approx(0.5, abs=1e-12)
    # The whole table: the mean over the probed batches (0, 2, 4) of a dense float64 numpy oracle.
    expected = np.mean([numpy_table_cosine(b) for b in known_batches(6)[0::2]])
    assert m["conflict/embedding/a_vs_b/cosine_mean"] == pytest.approx(expected, abs=1e-9)
    # What went to TensorBoard: the same scalars, a heatmap and the per-step histogram.
    events = read_events(tmp_path / "tb" / "version_0")
    tags = events.Tags()
    assert events.Scalars("conflict/embedding/f1/a_vs_b/cosine_mean")[-1].value == pytest.approx(-1.0, abs=1e-6)
    assert "conflict/embedding/cosine_heatmap" in tags["images"]
    assert "conflict/embedding/a_vs_b/cosine_per_step" in tags["histograms"]


def test_one_table_per_feature_is_one_field_set_with_the_concatenated_answers(tmp_path):
    """Two same-width tables, one per field: one view (the field set ``embedding_dict``) whose fields carry the
    known per-field answers and whose whole-set cosine is the concatenated table's numpy oracle."""
    monitor = GradientConflictMonitor(every_n_steps=2, strict=True)
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[monitor])
    trainer.fit(KnownGradientsPerFeature(), known_loader(n_batches=6))
    assert [v.name for v in monitor._views] == ["embedding_dict"]
    m = monitor.history[-1]["metrics"]
    assert m["conflict/embedding_dict/f0/a_vs_b/cosine_mean"] == 0.0
    assert m["conflict/embedding_dict/f1/a_vs_b/cosine_mean"] == pytest.approx(-1.0, abs=1e-12)
    assert m["conflict/embedding_dict/f1/a_vs_b/norm_ratio"] == pytest.approx(0.5, abs=1e-12)
    expected = np.mean([numpy_table_cosine(b) for b in known_batches(6)[0::2]])
    assert m["conflict/embedding_dict/a_vs_b/cosine_mean"] == pytest.approx(expected, abs=1e-9)
    assert not any("embedding_dict.f0/" in tag for tag in m)  # no per-table view beside the set
    layout = monitor.dashboard_layout()  # one series a chart: TensorBoard colours a chart's series by run
    assert list(layout["conflict: mean gradient cosine"]) == ["whole view: a vs b", "f0: a vs b", "f1: a vs b"]
    assert list(layout["conflict: share of negative cosines, whole view"]) == ["embedding_dict: a vs b"]


def test_stem_chunks_are_views_analysed_separately():
    monitor = GradientConflictMonitor(every_n_steps=1, column_groups=["a", "b", "shared"], strict=True)
    trainer = quiet_trainer(max_epochs=1, callbacks=[monitor])
    trainer.fit(KnownChunks(), known_loader(n_batches=3))
    assert [v.name for v in monitor._views] == ["embedding[a]", "embedding[b]", "embedding[shared]"]
    m = monitor.history[-1]["metrics"]
    # Shared chunk: opposite gradients.
    assert m["conflict/embedding[shared]/a_vs_b/cosine_mean"] == pytest.approx(-1.0, abs=1e-12)
    # Task chunks: the other task's gradient is exactly zero, so no cosine at all, and the ratio shows it.
    assert m["conflict/embedding[a]/b/gradient_norm"] == 0.0 and m["conflict/embedding[a]/a/gradient_norm"] > 0
    assert m["conflict/embedding[b]/a/gradient_norm"] == 0.0
    assert m["conflict/embedding[b]/a_vs_b/norm_ratio"] == 0.0
    for view in ("embedding[a]", "embedding[b]"):
        assert f"conflict/{view}/a_vs_b/cosine_mean" not in m
    assert "conflict/embedding[a]/a_vs_b/norm_ratio" not in m  # denominator zero: not logged


def test_bad_input_is_counted_warned_once_and_training_goes_on():
    faults = {1: "missing-b", 3: "nan-a", 5: "missing-b"}
    monitor = GradientConflictMonitor(every_n_steps=1, field_dims=KNOWN_FIELDS)
    trainer = quiet_trainer(max_epochs=1, callbacks=[monitor])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(KnownGradients(extra_task=True, faults=faults), known_loader(n_batches=6))
    record = monitor.history[-1]
    assert record["problems"] == {"unreached:c": 6, "missing:b": 2, "nonfinite:a": 1}
    # Two tasks or more measured in every batch: a, b (or a, c / b, c would have no embedding gradient)...
    assert record["measured_steps"] == 3 and record["skipped_steps"] == 3
    texts = [str(w.message) for w in caught if "GradientConflictMonitor" in str(w.message)]
    for kind in ("task 'c' does not reach", "task 'b' is missing", "task 'a' is NaN"):
        assert sum(kind in t for t in texts) == 1, (kind, texts)
    assert record["metrics"]["conflict/embedding/f1/a_vs_b/cosine_mean"] == pytest.approx(-1.0, abs=1e-12)
    assert trainer.global_step == 6


class SingleTask(KnownGradients):
    task_names = ("a",)


class NoProtocol(KnownGradients):
    task_names = None


def test_single_task_and_missing_protocol_fail_at_setup():
    with pytest.raises(ValueError, match="needs two tasks or more"):
        quiet_trainer(max_epochs=1, callbacks=[GradientConflictMonitor()]).fit(SingleTask(), known_loader())
    with pytest.raises(ValueError, match=r"task_names = \(\"click\", \"purchase\"\)"):
        quiet_trainer(max_epochs=1, callbacks=[GradientConflictMonitor()]).fit(NoProtocol(), known_loader())
    model = KnownGradients()
    del model.task_losses
    with pytest.raises(ValueError, match=r"self.task_losses = \{\}"):
        quiet_trainer(max_epochs=1, callbacks=[GradientConflictMonitor()]).fit(model, known_loader())


def test_resume_from_checkpoint_continues_history(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    first = GradientConflictMonitor(every_n_steps=2, field_dims=KNOWN_FIELDS, strict=True)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    quiet_trainer(max_epochs=2, callbacks=[first, ckpt], enable_checkpointing=True).fit(KnownGradients(), known_loader())
    resumed = GradientConflictMonitor(every_n_steps=2, field_dims=KNOWN_FIELDS, strict=True)
    trainer = quiet_trainer(max_epochs=3, callbacks=[resumed])
    trainer.fit(KnownGradients(), known_loader(), ckpt_path=str(tmp_path / "last.ckpt"))
    assert [(r["epoch"], r["step"]) for r in resumed.history] == [(0, 6), (1, 12), (2, 18)]
    assert resumed.history[:2] == first.history


