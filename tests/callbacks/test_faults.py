"""Faults a long run meets: a full disk or an unwritable directory becomes a warning, never a crash, and a
failing analysis is skipped for that epoch while checkpoints keep being written."""

import errno

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from helpers import TinyCTR, tiny_ctr_loader
from lightning_recanalysis import AnalysisReport, EmbeddingSpectrumMonitor


def _fit(tmp_path, callbacks, epochs=2, **kwargs):
    trainer = pl.Trainer(max_epochs=epochs, logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
                         callbacks=callbacks, accelerator="cpu", devices=1, enable_progress_bar=False,
                         enable_model_summary=False, **kwargs)
    trainer.fit(TinyCTR(), tiny_ctr_loader(n=256))
    return trainer


def test_disk_full_while_writing_events_is_a_warning(tmp_path, monkeypatch):
    from torch.utils.tensorboard.writer import FileWriter

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monitor = EmbeddingSpectrumMonitor(field_dims={"color": 7, "item": 50}, strict=True)
    # Lightning's own scalar logging goes through the same writer; only our images, histograms and records fail.
    monkeypatch.setattr(FileWriter, "add_summary", full)
    with pytest.warns(RuntimeWarning, match="No space left on device"):
        trainer = _fit(tmp_path, [monitor], enable_checkpointing=False)
    assert trainer.current_epoch == 2 and len(monitor.history) == 3


def test_unwritable_report_directory_is_a_warning_and_checkpoints_survive(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the report directory should be")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    monitor = EmbeddingSpectrumMonitor(field_dims={"color": 7, "item": 50})
    with pytest.warns(RuntimeWarning, match="the report could not be written"):
        _fit(tmp_path, [monitor, AnalysisReport(out_dir=blocker / "report"), ckpt])
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1


def test_nan_table_mid_run_is_skipped_and_training_goes_on(tmp_path):
    class Poisoned(TinyCTR):
        def on_train_epoch_end(self):
            if self.current_epoch == 0:
                with torch.no_grad():  # every row non-finite: nothing left to analyse this epoch
                    self.embedding.weight.fill_(float("nan"))

    monitor = EmbeddingSpectrumMonitor(field_dims={"color": 7, "item": 50})
    with pytest.warns(RuntimeWarning, match="non-finite or all zero"):
        trainer = pl.Trainer(max_epochs=2, logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
                             callbacks=[monitor], accelerator="cpu", devices=1, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False)
        trainer.fit(Poisoned(), tiny_ctr_loader(n=256))
    last = monitor.history[-1]["views"]["embedding"]
    assert last["excluded_rows"] == 57
    assert last["fields"]["item"]["information_abundance"] == 0.0  # zeros, not NaN


def test_state_keys_are_the_checkpoint_names_of_earlier_releases():
    """Checkpoints store each monitor's state under its state_key; the key is now built once (Lightning reads it
    on every hook call), and must still be the string it was, or old checkpoints would not load into it."""
    from lightning_recanalysis import (EntanglementMonitor, FeatureCorrelationMonitor, FieldPairCorrelationMonitor,
                                       GradientConflictMonitor)

    spectrum = EmbeddingSpectrumMonitor(include=["emb"])
    assert spectrum.state_key == "EmbeddingSpectrumMonitor{'include': ['emb'], 'exclude': None, 'parameters': None}"
    pairs = FieldPairCorrelationMonitor(["a", "b", "c"], fields=["c", "a"])
    assert pairs.state_key == "FieldPairCorrelationMonitor{'fields': ('c', 'a'), 'features': 'features'}"
    assert pairs.state_key is pairs.state_key  # built once
    assert FieldPairCorrelationMonitor(["a", "b", "c"]).state_key != pairs.state_key
    correlation = FeatureCorrelationMonitor(category_embedding="cat")
    assert correlation.state_key == (
        "FeatureCorrelationMonitor{'keys': {'target_category': 'target_category', 'behavior_category': "
        "'behavior_category', 'label': 'label', 'mask': 'mask'}, 'category_embedding': 'cat'}")
    # Monitors with nothing to tell two instances apart keep Lightning's default key, the class name.
    assert GradientConflictMonitor().state_key == "GradientConflictMonitor"
    assert EntanglementMonitor(user_field="user", item_field="item").state_key == "EntanglementMonitor"
