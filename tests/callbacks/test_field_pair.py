"""FieldPairCorrelationMonitor in real fits: tags read back from the event files, values against torchmetrics and
scipy, the planted pairs of the DCNv2 demo's synthetic data in the ground truth and in a trained cross layer, bad
input, resume."""

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.clustering import mutual_info_score

from helpers import read_events
from lightning_recanalysis import FieldPairCorrelationMonitor

DIMS = (2, 3, 6, 40)
NAMES = ["gender", "device", "slot", "site"]


class TinyFwFM(pl.LightningModule):
    """Field-weighted FM (Pan et al., WWW 2018): logit = b + sum_i w(x_i) + sum_{i<j} r_ij <v(x_i), v(x_j)>."""

    def __init__(self, field_dims=DIMS, dim: int = 4, lr: float = 0.05) -> None:
        super().__init__()
        n = len(field_dims)
        self.embedding = nn.Embedding(sum(field_dims), dim)
        self.linear = nn.Embedding(sum(field_dims), 1)
        self.register_buffer("offsets", torch.tensor([0, *np.cumsum(field_dims)[:-1].tolist()]))
        self.r = nn.Parameter(torch.full((n, n), 0.1))
        self.bias = nn.Parameter(torch.zeros(()))
        self.lr = lr

    def forward(self, x):
        e = self.embedding(x + self.offsets)
        inner = e @ e.transpose(1, 2)
        pairs = (torch.triu(self.r, 1) * inner).sum((1, 2))
        return self.bias + self.linear(x + self.offsets).sum((1, 2)) + pairs

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def fwfm_strength(module) -> torch.Tensor:
    """FwFM's learned pair strength: |r_ij|, symmetric, over all fields."""
    upper = torch.triu(module.r, 1).abs()
    return upper + upper.T


def _data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, d, (n,), generator=g) for d in DIMS], 1)
    y = ((x[:, 0] + x[:, 2]) % 2 == 0).float()  # an XOR of gender and slot parity
    y = torch.where(torch.rand(n, generator=g) < 0.1, 1 - y, y)
    return x, y


def _loader(x, y, batch_size=64):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _trainer(tmp_path, callbacks, max_epochs=2, **kwargs):
    return pl.Trainer(max_epochs=max_epochs, logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
                      callbacks=callbacks, accelerator="cpu", devices=1, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, **kwargs)


def _monitor(**kwargs):
    defaults = dict(features=0, label=1, num_values=5, warmup_batches=3, pair_strength=fwfm_strength, strict=True)
    return FieldPairCorrelationMonitor(NAMES, **{**defaults, **kwargs})


def test_fit_logs_every_tag_with_values_from_the_data_and_the_model(tmp_path):
    pl.seed_everything(0)
    x, y = _data()
    model = TinyFwFM()
    monitor = _monitor(bias_correction="none")
    _trainer(tmp_path, [monitor]).fit(model, _loader(x, y))
    events = read_events(tmp_path / "run" / "version_0")
    tags = events.Tags()
    ns = "correlation/field_pair"
    for tag in ("agreement", "agreement_interaction", "samples", "other_fraction"):
        assert [e.step for e in events.Scalars(f"{ns}/{tag}")] == [8, 16]  # 8 batches per epoch
    images = {f"{ns}/mutual_information", f"{ns}/interaction_information", f"{ns}/learned_strength"}
    assert images <= set(tags["images"])
    assert any(t.startswith(f"{ns}/top_pairs") for t in tags["tensors"])
    assert any(t.startswith(f"{ns}/inventory") for t in tags["tensors"])
    assert f"{ns}/_record" in tags["tensors"]  # the full record, for the report
    assert set(monitor.dashboard_layout()["correlation: field pairs"])  # charts of the custom-scalars layout
    # The ground truth is a property of the data: the second epoch's pass counts the same samples, gives the
    # same matrix, and the image is not drawn again. The learned one is drawn every epoch.
    assert [e.step for e in events.Images(f"{ns}/mutual_information")] == [8]
    assert [e.step for e in events.Images(f"{ns}/learned_strength")] == [8, 16]
    first, last = monitor.history
    assert first["mutual_information"] == last["mutual_information"] and last["samples"] == 512
    # Values: every pair's MI equals torchmetrics' MI (nats -> bits) of the same bucketed values; the slot field
    # (6 values, 5 kept) has its rarest value merged into "other".
    buckets = monitor.counts.buckets(x)
    mi = np.asarray(last["mutual_information"])
    for i in range(4):
        for j in range(4):
            joint = buckets[:, i] * 6 + buckets[:, j] if i != j else buckets[:, i]
            expected = float(mutual_info_score(joint, y.long())) / math.log(2)
            assert mi[i, j] == pytest.approx(expected, rel=2e-4, abs=5e-6), (i, j)  # torchmetrics: float32
    assert last["other_fraction"][3] > 0 and last["other_fraction"][0] == 0.0
    # The XOR-planted pair (gender, slot) is the top pair in MI and in interaction information.
    ii = np.asarray(last["interaction_information"])
    assert np.unravel_index(np.argmax(np.triu(mi, 1)), mi.shape) == (0, 2)
    assert np.unravel_index(np.argmax(np.triu(ii, 1)), ii.shape) == (0, 2)
    # Learned: the model's own |r_ij| at the end; agreement: scipy's Spearman over the six pairs.
    learned = fwfm_strength(model).detach().double().numpy()
    assert np.allclose(last["learned"], learned, rtol=1e-12)
    iu = np.triu_indices(4, 1)
    assert last["agreement"] == pytest.approx(spearmanr(learned[iu], mi[iu]).statistic, abs=1e-12)
    assert last["agreement_interaction"] == pytest.approx(spearmanr(learned[iu], ii[iu]).statistic, abs=1e-12)
    scalar = events.Scalars(f"{ns}/agreement")[-1].value
    assert scalar == pytest.approx(last["agreement"], rel=1e-6)
    assert events.Scalars(f"{ns}/samples")[-1].value == 512


def test_a_subset_of_fields_and_every_n_epochs(tmp_path):
    pl.seed_everything(1)
    x, y = _data()
    model = TinyFwFM()
    monitor = _monitor(fields=["slot", 0], every_n_epochs=2)
    _trainer(tmp_path, [monitor], max_epochs=3).fit(model, _loader(x, y))
    # Epochs 1 (the second) and 2 (the last) are analysed; epoch 0 is neither counted nor analysed.
    assert [r["epoch"] for r in monitor.history] == [1, 2]
    record = monitor.history[-1]
    assert record["fields"] == ["slot", "gender"] and record["samples"] == 512
    full = fwfm_strength(model).detach().double()
    assert np.allclose(record["learned"], [[full[2, 2], full[2, 0]], [full[0, 2], full[0, 0]]], rtol=1e-12)
    # The one pair of the subset is the planted one; its MI is the whole data's (slot, gender) MI.
    assert record["mutual_information"][0][1] == record["mutual_information"][1][0] > 0.3


def _ranks(matrix, n):
    """Rank (0 = largest) of every pair i < j of an N x N matrix."""
    iu = np.triu_indices(n, 1)
    order = np.argsort(-np.asarray(matrix)[iu], kind="stable")
    return {(int(iu[0][k]), int(iu[1][k])): r for r, k in enumerate(order)}


def _ground_truth(n_samples):
    from demo_models.data.ctr import synthetic_ctr

    ctr = synthetic_ctr(n_samples=n_samples, seed=0)
    monitor = FieldPairCorrelationMonitor(ctr.field_names, field_dims=ctr.field_dims, cross_layer=None, strict=True)
    for k in range(0, n_samples, 1024):  # as training batches would pass
        monitor.counts.update(ctr.features[k : k + 1024], ctr.label[k : k + 1024])
    return monitor.analyse()


@pytest.mark.slow
def test_planted_pairs_rank_at_the_top_of_the_ground_truth_on_the_demo_synthetic_data():
    from demo_models.data.ctr import PLANTED_PAIRS

    planted = [tuple(sorted(p)) for p in PLANTED_PAIRS]
    # The demo's data at its defaults (200,000 samples).
    record = _ground_truth(200_000)
    ii = np.asarray(record["interaction_information"])
    ranks = _ranks(ii, 8)
    assert sorted(ranks[p] for p in planted) == [0, 1, 2]
    # ... with a wide gap: every other pair's interaction information is under a tenth of the weakest planted one.
    others = [ii[p] for p in ranks if p not in planted]
    assert max(others) < 0.1 * min(ii[p] for p in planted)
    # The pair MI also counts what each field says alone. F6's frequent values shift the click rate on their own
    # (through F2's few dominant values), so every pair with F6 carries F6's MI: the planted pairs are all in the
    # upper half and the top pair is planted, but pairs like F3 x F6 can outrank a planted one.
    mi_ranks = _ranks(record["mutual_information"], 8)
    assert all(mi_ranks[p] < 14 for p in planted) and min(mi_ranks[p] for p in planted) == 0
    assert record["field_mutual_information"][6] == max(record["field_mutual_information"])
    # Fewer samples (20,000): still the top three in both.
    small = _ground_truth(20_000)
    for which in ("mutual_information", "interaction_information"):
        r = _ranks(small[which], 8)
        assert sorted(r[p] for p in planted) == [0, 1, 2], which


@pytest.mark.slow
def test_a_short_dcnv2_training_ranks_the_planted_pairs_above_the_median(tmp_path):
    """A cheaper DCNv2 than the demo's (width 8, one cross layer, one small tower, lr 1e-2, 20,000 samples, one
    epoch) so that a test can train it; the demo at its defaults is checked by running it (see README)."""
    from demo_models.data.batches import batch_loader
    from demo_models.data.ctr import PLANTED_PAIRS, synthetic_ctr
    from demo_models.dcnv2 import DCNv2

    pl.seed_everything(0)
    ctr = synthetic_ctr(n_samples=20_000, seed=0)
    model = DCNv2(ctr.field_dims, embed_dim=8, cross_layers=1, mlp_dims=(32,), lr=1e-2)
    initial = model.cross.layers[0].weight.detach().clone()
    monitor = FieldPairCorrelationMonitor(ctr.field_names, field_dims=ctr.field_dims, strict=True)  # cross: auto
    loader = batch_loader({"features": ctr.features, "label": ctr.label}, 512, shuffle=True, seed=0)
    _trainer(tmp_path, [monitor], max_epochs=1).fit(model, loader)
    assert monitor._cross[0] == "cross.layers.0" and monitor._cross[2] == 8
    record = monitor.history[-1]
    learned = np.asarray(record["learned"])
    iu = np.triu_indices(8, 1)
    ranks = {(int(a), int(b)): r for r, (a, b) in enumerate(zip(iu[0][np.argsort(-learned[iu])],
                                                                 iu[1][np.argsort(-learned[iu])]))}
    median_rank = (len(ranks) - 1) / 2
    assert all(ranks[tuple(sorted(p))] < median_rank for p in PLANTED_PAIRS), ranks
    assert record["agreement"] > 0 and record["agreement_interaction"] > 0
    # Before training the same statistic ranks them by chance: the planted pairs did not start on top.
    from lightning_recanalysis.functional import cross_layer_pair_strength

    before = cross_layer_pair_strength(initial, 8, 8).numpy()
    assert not all(before[p] > np.median(before[iu]) for p in PLANTED_PAIRS)


def test_bad_configuration_and_bad_batches_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"fields\[1\] = 7 is out of range: the batch has 4 fields"):
        FieldPairCorrelationMonitor(NAMES, fields=[0, 7])
    with pytest.raises(ValueError, match=r"fields\[0\] = 'age' is not one of the 4 field_names"):
        FieldPairCorrelationMonitor(NAMES, fields=["age"])
    with pytest.raises(ValueError, match="field_dims has 3 entries but field_names has 4 fields"):
        FieldPairCorrelationMonitor(NAMES, field_dims=[2, 3, 6])
    x, y = _data(n=128)
    # A batch with 3 fields for a monitor configured with 4: the first batch raises, naming both counts.
    with pytest.raises(ValueError, match=r"have 3 fields \(shape \(64, 3\)\) but field_names configures 4 fields "
                                         r"\(gender, device, slot, site\)"):
        _trainer(tmp_path, [_monitor(pair_strength=None, cross_layer=None)], max_epochs=1).fit(
            TinyFwFM(DIMS[:3]), _loader(x[:, :3], y))
    # pair_strength of the wrong shape: at setup, before the first step.
    with pytest.raises(ValueError, match=r"pair_strength returned \(3, 3\) at setup, but field_names configures 4"):
        _trainer(tmp_path, [_monitor(pair_strength=lambda m: torch.zeros(3, 3))], max_epochs=1).fit(
            TinyFwFM(), _loader(x, y))
    with pytest.raises(ValueError, match="cross_layer='head' must name an nn.Linear with a square weight"):
        _trainer(tmp_path, [_monitor(pair_strength=None, cross_layer="head")], max_epochs=1).fit(
            TinyFwFM(), _loader(x, y))
    with pytest.raises(ValueError, match=r"the batch has no field 'features' \(features\)"):
        _trainer(tmp_path, [_monitor(features="features")], max_epochs=1).fit(TinyFwFM(), _loader(x, y))
    bad = x.clone()
    bad[5, 1] = 3
    with pytest.raises(ValueError, match=r"device \(column 1\) has id 3, outside \[0, 3\)"):
        _trainer(tmp_path, [_monitor(field_dims=DIMS)], max_epochs=1).fit(TinyFwFM(), _loader(bad, y))
    # The same in the last batch, long after the warm-up, where batches wait to be counted: still an error.
    bad = x.clone()
    bad[-1, 1] = 3
    with pytest.raises(ValueError, match=r"device \(column 1\) has id 3, outside \[0, 3\)"):
        _trainer(tmp_path, [_monitor(field_dims=DIMS)], max_epochs=1).fit(TinyFwFM(), _loader(bad, y))
    # No cross layer and no pair_strength: one warning, and the ground truth alone is logged.
    with pytest.warns(RuntimeWarning, match="no DCNv2 cross layer found"):
        monitor = _monitor(pair_strength=None)
        _trainer(tmp_path, [monitor], max_epochs=1).fit(TinyFwFM(), _loader(x, y))
    assert monitor.history[-1]["learned"] is None and monitor.history[-1]["agreement"] is None


def test_fast_dev_run_counts_and_logs_nothing(tmp_path):
    x, y = _data(n=128)
    monitor = _monitor()
    _trainer(tmp_path, [monitor], fast_dev_run=True).fit(TinyFwFM(), _loader(x, y))
    assert monitor.history == [] and monitor.counts.samples == 0 and not monitor.counts._held


def test_resume_continues_the_history_with_the_same_bucketing(tmp_path):
    pl.seed_everything(2)
    x, y = _data()
    first = _monitor()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    pl.Trainer(max_epochs=2, logger=TensorBoardLogger(str(tmp_path), name="run", version=0), callbacks=[first, ckpt],
               accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False).fit(
        TinyFwFM(), _loader(x, y))
    # The checkpoint holds plain values only: it loads with weights_only=True and carries the bucketing.
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    saved = next(v for k, v in state["callbacks"].items() if "FieldPairCorrelationMonitor" in k)
    assert saved["vocabulary"] == first.counts.vocabulary and len(saved["history"]) == 2
    # A resumed run sees shuffled-away data in a different order: the bucketing must come from the checkpoint,
    # not from a new warm-up on other first batches.
    second = _monitor()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(9))
    pl.Trainer(max_epochs=4, logger=TensorBoardLogger(str(tmp_path), name="run", version=0), callbacks=[second],
               accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False).fit(TinyFwFM(), _loader(x[perm], y[perm]),
                                               ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [(r["stage"], r["epoch"]) for r in second.history] == [("epoch", e) for e in range(4)]
    assert second.counts.vocabulary == first.counts.vocabulary
    # Same samples, same buckets: the resumed epochs' ground truth equals the first run's.
    assert second.history[-1]["mutual_information"] == first.history[-1]["mutual_information"]
    assert second.history[0] == first.history[0]


class _NewDataEachEpoch(TinyFwFM):
    """Trains on the XOR-planted data in epoch 0, then on data whose label ignores the features (a stream)."""

    def train_dataloader(self):
        x, y = _data(seed=self.current_epoch)
        if self.current_epoch > 0:
            y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(self.current_epoch))]
        return _loader(x, y)


def _pair_mi_bits(monitor, x, y, i, j) -> float:
    buckets = monitor.counts.buckets(x)
    return float(mutual_info_score(buckets[:, i] * 6 + buckets[:, j], y.long())) / math.log(2)


@pytest.mark.parametrize("recount", [False, True])
def test_the_first_pass_is_the_ground_truth_unless_recount(tmp_path, recount):
    pl.seed_everything(3)
    monitor = _monitor(bias_correction="none", recount=recount)
    _trainer(tmp_path, [monitor], max_epochs=3, reload_dataloaders_every_n_epochs=1).fit(_NewDataEachEpoch())
    epochs = [r["epoch"] for r in monitor.history]
    assert epochs == [0, 1, 2] and all(r["samples"] == 512 for r in monitor.history)
    first_x, first_y = _data(seed=0)
    planted = monitor.history[0]["mutual_information"][0][2]
    assert planted == pytest.approx(_pair_mi_bits(monitor, first_x, first_y, 0, 2), rel=2e-4)
    last = monitor.history[-1]["mutual_information"][0][2]
    if not recount:
        # One pass, kept: the later epochs' tables are the first epoch's, whatever those epochs saw.
        assert all(r["mutual_information"] == monitor.history[0]["mutual_information"] for r in monitor.history)
        assert "kept" in monitor.inventory_markdown()
    else:
        # Each analysed epoch counts its own pass: the last one's label ignores the features.
        x, y = _data(seed=2)
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(2))]
        assert last == pytest.approx(_pair_mi_bits(monitor, x, y, 0, 2), rel=2e-4, abs=1e-6)
        assert last < planted / 10
