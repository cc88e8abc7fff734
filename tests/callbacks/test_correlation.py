"""FeatureCorrelationMonitor in real fits: tags read back from the event files, maps against the metric and the
functional oracle on the model's own weights, counting once vs every epoch, resume, bad batches, and the paper's
finding on the demo models (TIN learns the data's map, DIN cannot decay with position)."""

import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from scipy.stats import spearmanr

from demo_models.data.batches import batch_loader
from demo_models.data.sequences import planted_sequences
from demo_models.din import DIN
from demo_models.tin import TIN
from helpers import read_events
from lightning_recanalysis import FeatureCorrelationMonitor
from lightning_recanalysis.functional import learned_correlation, mutual_information
from lightning_recanalysis.metrics import BehaviorTargetCounts

FIELDS = ("target_category", "behavior_category", "label", "mask")


# These models are tiny: more intra-op threads only add contention on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_data():
    data = planted_sequences(n_samples=4096, seed=11)
    return data, data.tensors


def _trainer(tmp_path, callbacks, max_epochs=2, **kwargs):
    return pl.Trainer(max_epochs=max_epochs, logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
                      callbacks=callbacks, accelerator="cpu", devices=1, enable_progress_bar=False,
                      enable_model_summary=False, **{"enable_checkpointing": False, **kwargs})


def _tin_monitor(**kwargs):
    return FeatureCorrelationMonitor(category_embedding="category_embedding", position_embedding="position_embedding",
                                     strict=True, **kwargs)


def _oracle_counts(tensors):
    metric = BehaviorTargetCounts()
    metric.update(*(tensors[k] for k in FIELDS))
    return metric


def test_fit_logs_every_tag_with_maps_equal_to_the_oracles(tmp_path, small_data):
    data, tensors = small_data
    pl.seed_everything(0)
    model = TIN(data.num_categories, data.max_length, embed_dim=8)
    monitor = _tin_monitor(num_targets=2)
    _trainer(tmp_path, [monitor]).fit(model, batch_loader(tensors, 512, shuffle=True))
    steps = [8, 16]  # 4096 rows in batches of 512

    events = read_events(tmp_path / "run" / "version_0")
    tags = events.Tags()
    targets = [t["target_category"] for t in monitor.history[-1]["targets"]]
    assert len(targets) == 2
    assert [e.step for e in events.Scalars("correlation/agreement")] == steps
    for t in targets:
        assert [e.step for e in events.Scalars(f"correlation/target_{t}/agreement")] == steps
        assert [e.step for e in events.Images(f"correlation/target_{t}/learned")] == steps
        # The ground truth is a property of the data, counted in epoch 0: drawn once.
        assert [e.step for e in events.Images(f"correlation/target_{t}/ground_truth")] == [8]
    assert [e.step for e in events.Images("correlation/same_category_mi")] == [8]
    assert any(tag.startswith("correlation/inventory") for tag in tags["tensors"])

    # The history: one plain record per epoch, every number the report needs.
    assert [(r["stage"], r["epoch"], r["step"]) for r in monitor.history] == [("epoch", 0, 8), ("epoch", 1, 16)]
    json.dumps(monitor.history)
    last = monitor.history[-1]
    assert last["samples"] == 4096 and last["positive_rate"] == pytest.approx(float(tensors["label"].mean()))

    oracle = _oracle_counts(tensors)
    frequencies, _ = oracle.target_frequencies()
    assert targets == frequencies[:2].tolist()  # the most frequent target categories
    same = mutual_information(oracle.same_category_table(data.max_length))
    np.testing.assert_allclose(last["same_category_mi"], same.numpy(), rtol=1e-12)
    weights = model.category_embedding.weight.detach()
    positions = model.position_embedding.weight.detach()
    for record in last["targets"]:
        t, rows = record["target_category"], record["behavior_categories"]
        assert record["positions"] == list(range(1, 11)) and len(rows) == 10
        # Ground truth: MI from the oracle's counts of the same cells; rows ordered by their total MI.
        mi = mutual_information(oracle.table(t, rows, 10))
        np.testing.assert_allclose(record["ground_truth_mi"], mi.numpy(), rtol=1e-12)
        assert mi.sum(1).tolist() == sorted(mi.sum(1).tolist(), reverse=True)
        every_row = mutual_information(oracle.table(t, oracle.behavior_categories(t), 10)).sum(1)
        assert mi.sum(1)[-1] >= every_row.sort(descending=True).values[9] - 1e-15
        # Learned: the functional map on the final weights, e = E_cat[c] + E_pos[p], v = E_cat[t] + E_pos[0].
        e = weights[rows][:, None, :] + positions[1:11][None, :, :]
        learned = learned_correlation(e, weights[t] + positions[0])
        np.testing.assert_allclose(record["learned"], learned.numpy(), rtol=1e-9, atol=1e-12)
        rho = spearmanr(np.ravel(record["learned"]), mi.numpy().ravel()).correlation
        assert record["agreement"] == pytest.approx(rho)
    assert last["agreement"] == pytest.approx(np.mean([r["agreement"] for r in last["targets"]]))


def test_counting_every_epoch_leaves_the_ground_truth_unchanged(tmp_path, small_data):
    data, tensors = small_data
    results = {}
    for count_epochs in (1, None):
        pl.seed_everything(0)
        monitor = _tin_monitor(num_targets=1, count_epochs=count_epochs)
        _trainer(tmp_path / str(count_epochs), [monitor]).fit(
            TIN(data.num_categories, data.max_length, embed_dim=8), batch_loader(tensors, 512, shuffle=True))
        results[count_epochs] = monitor.history[-1]
    assert results[1]["samples"] == 4096 and results[None]["samples"] == 2 * 4096
    # Two passes over the same data double every count, which leaves the plug-in MI as it was.
    once, twice = results[1]["targets"][0], results[None]["targets"][0]
    assert once["behavior_categories"] == twice["behavior_categories"]
    np.testing.assert_allclose(once["ground_truth_mi"], twice["ground_truth_mi"], rtol=1e-9)
    np.testing.assert_allclose(results[1]["same_category_mi"], results[None]["same_category_mi"], rtol=1e-9)


def test_named_targets_names_and_ground_truth_only(tmp_path, small_data):
    data, tensors = small_data
    names = [f"cat{i}" for i in range(data.num_categories)]
    monitor = FeatureCorrelationMonitor(target_categories=[5, 11], category_names=names, num_behavior_categories=4,
                                        num_positions=6, strict=True)
    _trainer(tmp_path, [monitor], max_epochs=1).fit(TIN(data.num_categories, data.max_length, embed_dim=8),
                                                    batch_loader(tensors, 512, shuffle=False))
    record = monitor.history[-1]
    assert [t["target_category"] for t in record["targets"]] == [5, 11]
    assert record["targets"][0]["name"] == "cat5"
    assert all(n.startswith("cat") for n in record["targets"][0]["behavior_names"])
    assert np.shape(record["targets"][0]["ground_truth"]) == (4, 6)
    # No embeddings named: ground truth only, no agreement scalar.
    assert record["targets"][0]["learned"] is None and record["agreement"] is None
    assert "correlation/agreement" not in read_events(tmp_path / "run" / "version_0").Tags()["scalars"]


def test_resume_continues_the_history(tmp_path, small_data):
    data, tensors = small_data
    pl.seed_everything(2)
    first = _tin_monitor(num_targets=1)
    trainer = _trainer(tmp_path, [first, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
                       enable_checkpointing=True)
    trainer.fit(TIN(data.num_categories, data.max_length, embed_dim=8), batch_loader(tensors, 1024, shuffle=True))
    second = _tin_monitor(num_targets=1)
    resumed = _trainer(tmp_path, [second, ModelCheckpoint(dirpath=tmp_path / "ckpt2")], max_epochs=3,
                       enable_checkpointing=True)
    resumed.fit(TIN(data.num_categories, data.max_length, embed_dim=8), batch_loader(tensors, 1024, shuffle=True),
                ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [(r["stage"], r["epoch"]) for r in second.history] == [("epoch", 0), ("epoch", 1), ("epoch", 2)]
    assert second.history[:2] == first.history
    # The counts are not in the checkpoint: the resumed run counted its first epoch afresh, the same data.
    assert second.history[2]["samples"] == 4096
    np.testing.assert_allclose(second.history[2]["targets"][0]["ground_truth_mi"],
                               first.history[1]["targets"][0]["ground_truth_mi"], rtol=1e-9)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert any("FeatureCorrelationMonitor" in k for k in state["callbacks"])


def _renamed_loader(tensors, label_values=None):
    batch = {"tgt": tensors["target_category"], "seq": tensors["behavior_category"],
             "valid": tensors["mask"], "clk": tensors["label"].clone()}
    if label_values is not None:
        batch["clk"][: len(label_values)] = torch.tensor(label_values, dtype=torch.float32)
    return batch_loader(batch, 512, shuffle=False)


class RenamedTIN(TIN):
    """TIN reading the renamed batch keys."""

    def forward(self, batch):
        return super().forward({"target_category": batch["tgt"], "behavior_category": batch["seq"],
                                "mask": batch["valid"]})

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.binary_cross_entropy_with_logits(self(batch), batch["clk"].clamp(0, 1))


def test_bad_batch_fields_raise_errors_that_name_the_field(tmp_path, small_data):
    data, tensors = small_data
    keys = dict(target_category="tgt", behavior_category="seq", label="clk", mask="valid")
    with pytest.raises(ValueError, match=r"batch field 'clk' \(label\): label must hold 0/1 responses, found 2"):
        _trainer(tmp_path, [_tin_monitor(**keys)], max_epochs=1).fit(
            RenamedTIN(data.num_categories, data.max_length, embed_dim=8), _renamed_loader(tensors, [0, 2]))
    with pytest.raises(ValueError, match=r"no field 'target_category' \(target_category\); batch: "
                                         r"\['tgt', 'seq', 'valid', 'clk'\]. Pass target_category=<key or index>"):
        _trainer(tmp_path, [_tin_monitor()], max_epochs=1).fit(
            RenamedTIN(data.num_categories, data.max_length, embed_dim=8), _renamed_loader(tensors))
    # Ids beyond the category embedding the monitor reads are caught at the batch, not deep in the analysis.
    model = RenamedTIN(data.num_categories, data.max_length, embed_dim=8)
    model.short = torch.nn.Embedding(data.num_categories - 2, 8)
    with pytest.raises(ValueError, match=r"batch field 'tgt' \(target_category\): .* \[0, 10\) \(the category "
                                         r"embedding's size\), found 1[01]"):
        _trainer(tmp_path, [FeatureCorrelationMonitor(category_embedding="short", strict=True, **keys)],
                 max_epochs=1).fit(model, _renamed_loader(tensors))
    # A misnamed embedding is found at setup, before the first step, with the names that exist.
    with pytest.raises(ValueError, match=r"category_embedding='nope'.*\['category_embedding', 'position_embedding'\]"):
        _trainer(tmp_path, [FeatureCorrelationMonitor(category_embedding="nope")], max_epochs=1).fit(
            TIN(data.num_categories, data.max_length, embed_dim=8), batch_loader(tensors, 512, shuffle=False))


def test_batches_without_behaviour_or_with_one_label_give_zeros_and_training_goes_on(tmp_path):
    n, length, categories = 512, 6, 5
    g = torch.Generator().manual_seed(0)
    tensors = {"target_category": torch.randint(0, categories, (n,), generator=g),
               "behavior_category": torch.randint(0, categories, (n, length), generator=g),
               "mask": torch.zeros(n, length, dtype=torch.bool), "label": torch.ones(n)}
    tensors["mask"][256:, -2:] = True  # the first half of the batches have no behaviour at all
    monitor = _tin_monitor(num_targets=2, num_positions=4)
    trainer = _trainer(tmp_path, [monitor], max_epochs=2)
    trainer.fit(TIN(categories, length, embed_dim=4), batch_loader(tensors, 128, shuffle=False))
    assert trainer.current_epoch == 2 and monitor.failures == 0
    record = monitor.history[-1]
    assert record["positive_rate"] == 1.0
    values = [v for t in record["targets"] for key in ("ground_truth_mi", "ground_truth")
              for row in t[key] for v in row]
    values += record["same_category_mi"]
    assert values and all(v == 0.0 for v in values)  # every label 1: no information, zeros not NaN
    assert all(t["agreement"] == 0.0 for t in record["targets"])  # a constant ground truth has no ranking


@pytest.mark.slow
def test_tin_learns_the_planted_map_and_din_cannot_decay(tmp_path):
    """The paper's finding, live: after two epochs on the planted data TIN's learned map agrees with the
    ground truth (Spearman >= 0.7 over the heatmap); DIN, having no position term, has every row flat."""
    from demo_models.sequence_demo import build

    pl.seed_everything(0)
    experiment = build(model="tin", data="synthetic", seed=0, monitors=True)
    monitor = experiment.callbacks[0]
    _trainer(tmp_path / "tin", [monitor], max_epochs=2).fit(experiment.module, experiment.train_loader)
    last = monitor.history[-1]
    assert last["agreement"] >= 0.7, [t["agreement"] for t in last["targets"]]
    assert last["targets"][0]["agreement"] >= 0.7
    for t in last["targets"]:
        assert t["behavior_categories"][0] == t["target_category"]  # the own category is the top row
        learned = np.asarray(t["learned"])
        assert learned[0, 0] == learned.max() and learned[0, 0] > 2 * learned[0, 4:].max()  # and it decays

    pl.seed_everything(0)
    experiment = build(model="din", data="synthetic", seed=0, monitors=True)
    din_monitor = experiment.callbacks[0]
    loader = batch_loader({k: v[:40_000] for k, v in experiment.train_loader.dataset.tensors.items()}, 512,
                          shuffle=True)
    _trainer(tmp_path / "din", [din_monitor], max_epochs=1).fit(experiment.module, loader)
    assert isinstance(experiment.module, DIN)
    for t in din_monitor.history[-1]["targets"]:
        learned = np.asarray(t["learned"])
        assert np.allclose(learned, learned[:, :1])  # no decay with position: every row constant
