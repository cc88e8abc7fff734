"""trainer.validate / trainer.test with the monitors attached analyse once, on the loaded weights over the
evaluation batches: where the record is filed, what a checkpoint's history becomes, what runs without data, the
gradient probe's needs (inference mode off) and its traces (none), entanglement under test, the report."""

from __future__ import annotations

import json
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from helpers import read_events
from lightning_recanalysis import (AnalysisReport, EmbeddingSpectrumMonitor, EntanglementMonitor,
                                   FieldPairCorrelationMonitor, GradientConflictMonitor, analyze)
from lightning_recanalysis.toy import ToyDCN, ToyTwoTask, toy_loader


class EvaluatedDCN(ToyDCN):
    def validation_step(self, batch, batch_idx):
        return self(batch)

    def test_step(self, batch, batch_idx):
        return self(batch)


class EvaluatedTwoTask(ToyTwoTask):
    """The multi-task protocol for evaluation too: the task losses stored in validation_step and test_step."""

    def validation_step(self, batch, batch_idx):
        scores = self(batch)
        self.task_losses = {t: nn.functional.binary_cross_entropy_with_logits(scores[t], batch[t].float())
                            for t in self.task_names}
        return {"task_scores": scores, "task_labels": {t: batch[t] for t in self.task_names}}

    def test_step(self, batch, batch_idx):
        return self.validation_step(batch, batch_idx)


def _trainer(tmp_path, callbacks, name="run", **kwargs):
    options = dict(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, logger=TensorBoardLogger(str(tmp_path), name=name, version=0))
    return pl.Trainer(callbacks=callbacks, **{**options, **kwargs})


def _ia(record, view="embedding"):
    return {name: f.information_abundance for name, f in record.views[view].fields.items()}


def test_validate_on_a_checkpoint_files_the_analysis_at_its_epoch_and_step(tmp_path, one_thread):
    torch.manual_seed(0)
    live = EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    _trainer(tmp_path, [live, ckpt], max_epochs=2, enable_checkpointing=True).fit(EvaluatedDCN(), toy_loader())
    first = [r for r in live.records if r.stage == "epoch"][0]

    offline = EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])
    report = AnalysisReport(out_dir=tmp_path / "report")
    _trainer(tmp_path, [offline, report], name="offline").validate(
        EvaluatedDCN(), toy_loader(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"), verbose=False)
    # The live run's baseline, from the checkpoint's own history, then this analysis at the checkpoint's epoch/step
    assert [(r.stage, r.epoch, r.step) for r in offline.records] == [("init", 0, 0), ("epoch", 0, first.step)]
    record = offline.records[-1]
    assert record.extra == {"evaluated": "validate"}
    assert _ia(record) == _ia(first)  # the same weights: the same numbers, bit for bit
    assert record.interaction.matrix == first.interaction.matrix
    events = read_events(tmp_path / "offline" / "version_0")
    ia_vs_init = events.Scalars("collapse/embedding/field_0/information_abundance_vs_init")
    assert [e.step for e in ia_vs_init] == [0, first.step]  # the baseline's own tags too, as the live run's
    assert "collapse/coverage/text_summary" in events.Tags()["tensors"]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert "collapse" in summary["analyses"]


def test_a_checkpoint_restored_in_evaluation_does_not_replace_the_history(tmp_path, one_thread):
    monitor = EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])
    trainer = _trainer(tmp_path, [monitor])
    trainer.validate(EvaluatedDCN(), toy_loader(), verbose=False)
    before = list(monitor.history)
    monitor.load_state_dict({"history": [{"stage": "epoch", "epoch": 7, "step": 70, "views": {}}]})
    assert monitor.history == before and monitor.restored_history[0]["epoch"] == 7


def test_test_stage_and_the_report(tmp_path, one_thread):
    monitor = FieldPairCorrelationMonitor(["a", "b", "c"])
    report = AnalysisReport(out_dir=tmp_path / "report")
    _trainer(tmp_path, [monitor, report]).test(EvaluatedDCN(), toy_loader(), verbose=False)
    record = monitor.records[-1]
    assert (record.stage, record.extra) == ("epoch", {"evaluated": "test"})
    assert record.samples == 32 and record.learned is not None  # two batches of 16, the cross layer read
    assert sorted(report.paths) == ["html", "markdown", "summary"]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert "correlation/field_pair" in summary["analyses"]


def test_counts_of_the_evaluation_batches_equal_the_live_counts_of_the_same_batches(tmp_path, one_thread):
    live = FieldPairCorrelationMonitor(["a", "b", "c"])
    model = EvaluatedDCN()
    _trainer(tmp_path, [live], max_epochs=1).fit(model, toy_loader())
    result = analyze(model, toy_loader(), [FieldPairCorrelationMonitor(["a", "b", "c"])], out=tmp_path / "off")
    offline = result.records["correlation/field_pair"][-1]
    for name in ("samples", "mutual_information", "interaction_information", "field_mutual_information",
                 "other_fraction", "learned", "agreement"):
        assert getattr(offline, name) == getattr(live.records[-1], name), name


def test_without_data_only_the_analyses_of_the_weights_run_and_the_others_say_so(tmp_path, one_thread):
    monitors = [EmbeddingSpectrumMonitor(), FieldPairCorrelationMonitor(["a", "b", "c"])]  # no field_dims
    with pytest.warns(RuntimeWarning, match="no data") as caught:
        result = analyze(ToyDCN(), monitors=monitors, out=tmp_path / "off")
    messages = " ".join(str(w.message) for w in caught)
    assert "no interaction matrix" in messages and "no ground-truth field-pair MI" in messages
    assert [r.stage for r in result.records["collapse"]] == ["epoch"]
    assert result.records["collapse"][0].interaction is None
    assert result.records["correlation/field_pair"] == []
    coverage = json.loads(result.paths["summary"].read_text())["coverage"]
    rows = {(c["monitor"], c["analysis"]): c["runs"] for c in coverage}
    assert rows[("collapse", "spectra of 1 view(s)")] == "yes"
    assert rows[("correlation/field_pair", "ground-truth field-pair MI")] == "no"


def _oracle_cosine(model, batch):
    """The whole table's cosine between the two tasks' loss gradients, by autograd on the weight (float64)."""
    weight = model.embedding.weight
    grads = []
    for task in model.task_names:
        scores = model(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(scores[task], batch[task].float())
        grads.append(torch.autograd.grad(loss, weight)[0].double().flatten())
    return float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm()))


def test_the_probe_on_an_evaluation_batch_equals_autograd_and_leaves_no_trace(tmp_path, one_thread):
    torch.manual_seed(1)
    model = EvaluatedTwoTask()
    batch = next(iter(toy_loader("two_task", batch_size=32)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monitor = GradientConflictMonitor(every_n_steps=1, field_dims={"user": 8, "item": 6}, strict=True)
    result = analyze(model, [batch], [monitor], out=tmp_path / "off")
    record = result.records["conflict"][-1]
    assert (record.stage, record.measured_steps, record.skipped_steps) == ("train", 1, 0)
    cosine = record.metrics["conflict/embedding/click_vs_buy/cosine_mean"]
    # float32 gradients summed in another order than autograd's dense embedding backward: to float32's precision
    assert np.isclose(cosine, _oracle_cosine(model, batch), rtol=1e-6, atol=0)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.is_grad_enabled()  # the caller's grad mode, as it was
    assert "validation_step" not in vars(model)  # nothing patched onto the module is left behind


def test_the_probe_says_it_needs_inference_mode_off(tmp_path, one_thread):
    monitor = GradientConflictMonitor(every_n_steps=1, field_dims={"user": 8, "item": 6})
    with pytest.warns(RuntimeWarning, match=r"inference_mode=False"):
        _trainer(tmp_path, [monitor]).validate(EvaluatedTwoTask(), toy_loader("two_task"), verbose=False)
    assert monitor.history == []
    assert monitor.coverage_record["coverage"][0]["runs"] is False


def test_a_validation_step_that_stores_no_task_losses_is_counted(tmp_path, one_thread):
    monitor = GradientConflictMonitor(every_n_steps=1, field_dims={"user": 8, "item": 6})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = analyze(ToyTwoTask(), toy_loader("two_task"), [monitor], out=tmp_path / "off")
    record = result.records["conflict"][-1]
    assert record.measured_steps == 0 and record.skipped_steps == 2 and record.problems["not-stored"] == 2
    assert any("stored no task losses" in str(w.message) for w in caught)


def test_entanglement_under_test_equals_validate(tmp_path, one_thread):
    torch.manual_seed(0)
    model = EvaluatedTwoTask()
    records = []
    for stage in ("validate", "test"):
        monitor = EntanglementMonitor(user_field="user", item_field="item", field_dims={"user": 8, "item": 6})
        trainer = _trainer(tmp_path, [monitor], name=stage)
        getattr(trainer, stage)(model, toy_loader("two_task", seed=1), verbose=False)
        records.append(monitor.records[-1])
    assert [r.stage for r in records] == ["validation", "validation"]
    assert records[0].metrics == records[1].metrics and records[0].metrics["entanglement/pairs"] == 32.0


def test_a_plain_module_keeps_its_names(tmp_path, one_thread):
    torch.manual_seed(0)
    plain = nn.ModuleDict({"tables": nn.ModuleDict({"user": nn.Embedding(8, 4), "item": nn.Embedding(6, 4)})})

    def forward(module, batch):
        return module["tables"]["user"](batch["features"][:, 0]) * module["tables"]["item"](batch["features"][:, 1])

    result = analyze(plain, toy_loader("two_task"), [EmbeddingSpectrumMonitor(), FieldPairCorrelationMonitor(
        ["user", "item"], label="click", cross_layer=None)], out=tmp_path / "off", forward=forward)
    views = result.records["collapse"][-1].views  # the two same-width tables: one field set, named by their module
    assert list(views) == ["tables"] and sorted(views["tables"].fields) == ["item", "user"]
    assert result.records["correlation/field_pair"][-1].samples == 32
    assert "collapse/tables/user/information_abundance" in read_events(result.log_dir).Tags()["scalars"]


def test_the_thresholds_reach_the_monitors_and_the_report(tmp_path, one_thread):
    from lightning_recanalysis.findings import ReportThresholds

    thresholds = ReportThresholds(collapsed_fraction=0.9)
    result = analyze(ToyDCN(), monitors=[EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])], out=tmp_path / "off",
                     thresholds=thresholds)
    assert result.monitors[0].thresholds is thresholds
