"""Nothing claimed that is not there, nothing skipped in silence: a tower's square layer is no cross layer, an
analysis that cannot run says so at fit start (warning, Text tab, the report's Coverage), padding rows are left out
quietly while broken rows still warn, and the report's thresholds reach the monitors' live findings."""

import json
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from helpers import read_events
from lightning_recanalysis import AnalysisReport, EmbeddingSpectrumMonitor, EntanglementMonitor
from lightning_recanalysis.findings import ReportThresholds
from lightning_recanalysis.toy import ToyTwoTask, toy_loader


def _trainer(tmp_path, callbacks, **kwargs):
    options = dict(max_epochs=1, accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, logger=TensorBoardLogger(str(tmp_path), name="run", version=0))
    return pl.Trainer(callbacks=callbacks, **{**options, **kwargs})


class TwoTowers(pl.LightningModule):
    """Four 8-wide fields in one table, concatenated into 32 columns, and a tower per task whose first layer is
    an ``nn.Linear(32, 32)``: square over the fields' columns, and no cross layer."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(40, 8)
        self.register_buffer("offsets", torch.tensor([0, 10, 20, 30]))
        self.towers = nn.ModuleList([nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)) for _ in range(2)])

    def training_step(self, batch, batch_idx):
        x = self.embedding(batch[0] + self.offsets).flatten(1)
        return sum(nn.functional.binary_cross_entropy_with_logits(t(x).squeeze(1), batch[1]) for t in self.towers)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _tower_loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (64, 4), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] % 2).float()), batch_size=16)


def test_a_towers_square_layer_is_no_cross_layer_and_the_report_says_so(tmp_path):
    monitor = EmbeddingSpectrumMonitor(field_dims=[10, 10, 10, 10])
    report = AnalysisReport(out_dir=tmp_path / "report")
    with pytest.warns(RuntimeWarning, match="no interaction matrix: no cross layer found"):
        _trainer(tmp_path, [monitor, report]).fit(TwoTowers(), _tower_loader())
    assert all(r.interaction is None for r in monitor.records)
    tags = read_events(tmp_path / "run" / "version_0").Tags()
    assert not [t for t in tags["scalars"] if "/interaction/" in t]
    coverage = json.loads((tmp_path / "report" / "summary.json").read_text())["coverage"]
    assert {"monitor": "collapse", "analysis": "interaction matrix", "runs": "no"}.items() <= \
        next(c for c in coverage if c["analysis"] == "interaction matrix").items()
    # Named, the same layer is read: the user says it is one.
    named = EmbeddingSpectrumMonitor(field_dims=[10, 10, 10, 10], cross_layer="towers.0.0")
    _trainer(tmp_path / "named", [named]).fit(TwoTowers(), _tower_loader())
    assert named.records[-1].interaction.layer == "towers.0.0"


def test_validation_turned_off_is_stated_not_silent(tmp_path):
    monitor = EntanglementMonitor(user_field="user", item_field="item", field_dims={"user": 8, "item": 6})
    report = AnalysisReport(out_dir=tmp_path / "report")
    with pytest.warns(RuntimeWarning, match="limit_val_batches=0"):
        _trainer(tmp_path, [monitor, report], limit_val_batches=0).fit(
            ToyTwoTask(), toy_loader("two_task"), toy_loader("two_task"))
    assert monitor.history == []
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    rows = [c for c in summary["coverage"] if c["monitor"] == "entanglement"]
    assert [(c["analysis"], c["runs"]) for c in rows] == [("distances and AUROC by label subset", "no"),
                                                          ("conflict subsets", "no")]
    assert "Coverage" in (tmp_path / "report" / "report.html").read_text()
    text = read_events(tmp_path / "run" / "version_0").Tensors("entanglement/coverage/text_summary")
    assert "does not run" in text[-1].tensor_proto.string_val[0].decode()


class Padded(pl.LightningModule):
    def __init__(self, broken: bool):
        super().__init__()
        self.item = nn.Embedding(20, 4, padding_idx=0)
        if broken:
            with torch.no_grad():
                self.item.weight[5] = float("nan")

    def training_step(self, batch, batch_idx):
        return self.item(batch[0]).nan_to_num().pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_padding_rows_are_left_out_quietly_and_broken_rows_still_warn(tmp_path):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randint(0, 20, (32,))), batch_size=8)
    monitor = EmbeddingSpectrumMonitor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path / "padded", [monitor]).fit(Padded(broken=False), loader)
    assert monitor.records[-1].views["item"].excluded_rows == 1  # the padding row, left out of the spectrum
    assert not [w for w in caught if "non-finite or all zero" in str(w.message)]
    with pytest.warns(RuntimeWarning, match="2 rows of 'item' are non-finite or all zero"):
        _trainer(tmp_path / "broken", [EmbeddingSpectrumMonitor()]).fit(Padded(broken=True), loader)


def test_the_reports_thresholds_reach_the_live_findings(tmp_path):
    # Every dimension counts as unused and any two make a collapse: the live Text tab says so, as the report does.
    thresholds = ReportThresholds(unused_dimension=1.01, collapsed_fraction=0.0)
    monitor = EmbeddingSpectrumMonitor(field_dims=[10, 10, 10, 10], cross_layer=None)
    report = AnalysisReport(out_dir=tmp_path / "report", thresholds=thresholds)
    _trainer(tmp_path, [monitor, report]).fit(TwoTowers(), _tower_loader())
    assert monitor.thresholds is thresholds
    live = read_events(tmp_path / "run" / "version_0").Tensors("collapse/findings/text_summary")[-1]
    text = live.tensor_proto.string_val[0].decode()
    assert text.count("**Problem**") == 4
    problems = [f for f in report.findings if f.is_problem]
    assert len(problems) == 4 and all(f.text in text for f in problems)
