"""Offline analysis of the demos' checkpoints gives the live run's analyses (issue 25's figures).

On a small slice of each demo's synthetic data, trained a few epochs with the demo's monitors:

- DCNv2: the last checkpoint's IA, spectra and interaction matrix equal the live run's last record to 1e-9
  relative, the field-pair counts over the same batches are identical; a directory of its per-epoch checkpoints
  (``python -m lightning_recanalysis analyze``) gives the live IA trajectory epoch by epoch, and ``compare``
  reads the offline run like the live one;
- TIN: the behaviour-target counts over the same batches are identical, the learned map equal;
- MMoE: the gradient cosines on the same batch and weights (the first probe of epoch 1, on the epoch-0
  checkpoint) equal the live ones to 1e-9, and the entanglement of the validation batches is the live one.
"""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_recanalysis import analyze
from lightning_recanalysis.cli import main
from lightning_recanalysis.report import read_run

pytestmark = pytest.mark.slow

RTOL = 1e-9


def _fit(tmp_path, experiment, epochs, extra=(), **kwargs):
    pl.seed_everything(0, verbose=False)
    options = dict(max_epochs=epochs, accelerator="cpu", devices=1, deterministic=True, enable_progress_bar=False,
                   enable_model_summary=False, logger=TensorBoardLogger(str(tmp_path), name="live", version=0))
    trainer = pl.Trainer(callbacks=[*experiment.callbacks, *extra], **{**options, **kwargs})
    trainer.fit(experiment.module, experiment.train_loader, experiment.val_loader)
    return trainer


def _close(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=RTOL, atol=0)


def _assert_same_spectra(live, offline):
    assert live.views.keys() == offline.views.keys()
    for name, view in live.views.items():
        for field, stats in view.fields.items():
            other = offline.views[name].fields[field]
            for measure in ("information_abundance", "effective_rank", "stable_rank", "normalized_spectrum"):
                assert _close(stats[measure], other[measure]), (name, field, measure)


def test_dcnv2_last_checkpoint_and_the_trajectory_of_its_checkpoints(tmp_path, one_thread):
    from demo_models.dcnv2 import DCNv2, build, demo_loader, monitors

    n = 3000
    experiment = build("dcnv2", "synthetic", 0, monitors=True, n_samples=n)
    spectrum, field_pair = experiment.callbacks
    # The Trainer's default checkpointing: the demo module turns it into one checkpoint per epoch.
    trainer = _fit(tmp_path, experiment, epochs=3)
    folder = tmp_path / "live" / "version_0" / "checkpoints"
    files = sorted(folder.glob("*.ckpt"))
    assert [f.name for f in files] == [f"epoch={e}-step={s}.ckpt" for e, s in ((0, 3), (1, 6), (2, 9))]
    assert trainer.global_step == 9

    # The last checkpoint, in a notebook: the live run's last analyses.
    model = DCNv2.load_from_checkpoint(files[-1])
    result = analyze(model, demo_loader("train", n_samples=n), monitors(model), out=tmp_path / "last", epoch=2, step=9)
    live_spectrum, offline_spectrum = spectrum.records[-1], result.records["collapse"][-1]
    assert (offline_spectrum.stage, offline_spectrum.epoch, offline_spectrum.step) == ("epoch", 2, 9)
    _assert_same_spectra(live_spectrum, offline_spectrum)
    assert live_spectrum.interaction.fields == offline_spectrum.interaction.fields
    assert _close(live_spectrum.interaction.matrix, offline_spectrum.interaction.matrix)
    live_pairs, offline_pairs = field_pair.records[-1], result.records["correlation/field_pair"][-1]
    for name in ("samples", "field_mutual_information", "mutual_information", "interaction_information",
                 "other_fraction"):  # counts of the same batches: identical
        assert getattr(live_pairs, name) == getattr(offline_pairs, name), name
    assert _close(live_pairs.learned, offline_pairs.learned) and live_pairs.agreement == offline_pairs.agreement

    # The directory, from the command line: every checkpoint at its epoch and step, as the live run logged it.
    out = tmp_path / "offline"
    assert main(["analyze", str(folder), "--model", "demo_models.dcnv2.DCNv2", "--monitors",
                 "demo_models.dcnv2.monitors", "--data", "demo_models.dcnv2.demo_loader", "--data-args",
                 json.dumps({"split": "train", "n_samples": n}), "--out", str(out), "--quiet"]) == 0
    run = read_run(out)
    live_epochs = [r for r in spectrum.records if r.stage == "epoch"]
    offline_epochs = [r for r in run.records["collapse"] if r.stage == "epoch"]
    assert [(r.epoch, r.step) for r in offline_epochs] == [(r.epoch, r.step) for r in live_epochs] == [(0, 3), (1, 6), (2, 9)]
    for live, offline in zip(live_epochs, offline_epochs):
        _assert_same_spectra(live, offline)
    assert [r.stage for r in run.records["collapse"]][0] == "init"  # the live baseline, from the checkpoints
    ia = "collapse/embedding.embedding/F0/information_abundance"
    assert [s for s, _ in run.scalars[ia]] == [s for s, _ in read_run(tmp_path / "live" / "version_0").scalars[ia]]
    offline_pairs = [r for r in run.records["correlation/field_pair"] if r.stage == "epoch"]
    assert len(offline_pairs) == len(field_pair.records) == 3
    assert all(_close(a.learned, b.learned) and a.mutual_information == b.mutual_information
               for a, b in zip(field_pair.records, offline_pairs))
    assert (out / "report.html").is_file()
    assert main(["compare", str(tmp_path / "live" / "version_0"), str(out), "--out", str(tmp_path / "cmp"),
                 "--quiet"]) == 0
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(compared["run"]["runs"]) == 2 and "collapse" in compared["analyses"]


def test_tin_counts_over_the_same_batches_are_identical(tmp_path, one_thread):
    from demo_models.sequence_demo import build
    from demo_models.tin import TIN

    experiment = build("tin", "synthetic", 0, monitors=True, n_samples=3000)
    (live,) = experiment.callbacks
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}")
    _fit(tmp_path, experiment, epochs=2, extra=[checkpoint])
    model = TIN.load_from_checkpoint(tmp_path / "ckpt" / "epoch=1.ckpt")
    again = build("tin", "synthetic", 0, monitors=True, n_samples=3000)  # the same data, a fresh monitor
    result = analyze(model, again.train_loader, again.callbacks, out=tmp_path / "offline")
    a, b = live.records[-1], result.records["correlation"][-1]
    assert (a.samples, a.positive_rate, a.same_category_mi) == (b.samples, b.positive_rate, b.same_category_mi)
    assert [t.target_category for t in a.targets] == [t.target_category for t in b.targets]
    for x, y in zip(a.targets, b.targets):
        assert (x.behavior_categories, x.ground_truth_mi, x.samples) == (y.behavior_categories, y.ground_truth_mi,
                                                                         y.samples)
        assert _close(x.learned, y.learned) and np.isclose(x.agreement, y.agreement, rtol=RTOL)


class KeepBatch(Callback):
    """The training batch that the gradient probe measures first in ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            self.batch = {k: v.clone() for k, v in batch.items()}


def _loaded(module, path):
    module.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    return module


def test_mmoe_gradient_cosines_on_the_same_batch_and_weights(tmp_path, one_thread):
    from demo_models.multitask import build

    experiment = build("mmoe", "synthetic", 0, monitors=True, n_samples=2000)
    conflict, entanglement = experiment.callbacks
    conflict.every_n_steps = 10_000  # one probe an epoch: its first batch
    keep = KeepBatch(epoch=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    _fit(tmp_path, experiment, epochs=2, extra=[keep, checkpoint])
    live = [r for r in conflict.records if r.epoch == 1][0]
    assert live.measured_steps == 1

    # The probe of epoch 1 saw the weights of the epoch-0 checkpoint and the batch kept: the same offline. (The
    # multi-task demos save no hyperparameters: the module is built as the demo builds it, then loaded.)
    again = build("mmoe", "synthetic", 0, monitors=True, n_samples=2000)
    model = _loaded(again.module, tmp_path / "ckpt" / "epoch=0.ckpt")
    probe = again.callbacks[0]
    probe.every_n_steps = 1
    result = analyze(model, [keep.batch], [probe], out=tmp_path / "offline")
    offline = result.records["conflict"][-1]
    assert offline.measured_steps == 1 and live.metrics.keys() == offline.metrics.keys()
    assert sum(tag.endswith("/cosine_mean") for tag in live.metrics) >= 2  # the table and its fields
    for tag, value in live.metrics.items():
        assert np.isclose(value, offline.metrics[tag], rtol=RTOL, atol=1e-12), tag
    assert all(p.grad is None for p in model.parameters())

    # Entanglement over the validation batches, on the last checkpoint: the live run's last validation epoch.
    model = _loaded(build("mmoe", "synthetic", 0, monitors=False, n_samples=2000).module,
                    tmp_path / "ckpt" / "epoch=1.ckpt")
    result = analyze(model, again.val_loader, [again.callbacks[1]], out=tmp_path / "entanglement")
    a, b = entanglement.records[-1], result.records["entanglement"][-1]
    assert (a.stage, a.epoch, b.stage) == ("validation", 1, "validation")
    assert a.metrics.keys() == b.metrics.keys() and a.metrics["entanglement/pairs"] > 0
    assert all(np.isclose(v, b.metrics[k], rtol=RTOL, atol=1e-12) for k, v in a.metrics.items())
