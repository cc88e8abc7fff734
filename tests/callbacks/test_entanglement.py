"""EntanglementMonitor against numpy/scipy oracles on fixed embeddings, per view and per label subset."""

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from torch import nn
from torch.utils.data import DataLoader

from helpers import read_events
from multitask_helpers import ListBatches, quiet_trainer

from lightning_recanalysis import EntanglementMonitor
from lightning_recanalysis.callbacks.entanglement import label_pattern_name

USERS, ITEMS = 5, 5  # one concatenated table: user rows 0-4, item rows 5-9
FIELDS = {"user_id": USERS, "item_id": ITEMS}


# These models are tiny: more intra-op threads only add contention on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def pair_batches(n_batches=3, batch_size=100, seed=0):
    """Validation batches: (user, item) ids, two correlated labels, and scores that track them noisily."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        users = torch.randint(0, USERS, (batch_size,), generator=g)
        items = USERS + torch.randint(0, ITEMS, (batch_size,), generator=g)
        common = torch.rand(batch_size, generator=g)
        labels = torch.stack([((common + torch.rand(batch_size, generator=g)) > 1.0).float() for _ in range(2)], 1)
        scores = labels + 0.8 * torch.randn(batch_size, 2, generator=g)
        batches.append({"ids": torch.stack([users, items], 1), "labels": labels, "scores": scores})
    return batches


class FixedPairs(pl.LightningModule):
    """Embeddings that training does not move (lr 0); validation returns the batch's own scores and labels."""

    task_names = ("a", "b")

    def __init__(self, width=4, separate_tables=False, protocol=True):
        super().__init__()
        self.task_losses = {}
        self.separate, self.protocol = separate_tables, protocol
        if separate_tables:
            self.user = nn.Embedding(USERS, width)
            self.item = nn.Embedding(ITEMS, width)
        else:
            self.embedding = nn.Embedding(USERS + ITEMS, width)

    def embed(self, ids):
        if self.separate:
            return self.user(ids[:, 0]), self.item(ids[:, 1] - USERS)
        e = self.embedding(ids)
        return e[:, 0], e[:, 1]

    def training_step(self, batch, batch_idx):
        u, i = self.embed(batch["ids"])
        return (u * i).sum()

    def validation_step(self, batch, batch_idx):
        self.embed(batch["ids"])
        if not self.protocol:
            return None
        return {"task_scores": {"a": batch["scores"][:, 0], "b": batch["scores"][:, 1]},
                "task_labels": {"a": batch["labels"][:, 0], "b": batch["labels"][:, 1]}}

    def weights(self):
        if self.separate:
            return self.user.weight.detach().numpy(), self.item.weight.detach().numpy()
        w = self.embedding.weight.detach().numpy()
        return w[:USERS], w[USERS:]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(model, monitor, tmp_path=None):
    loader = DataLoader(ListBatches(pair_batches()), batch_size=None)
    quiet_trainer(tmp_path, max_epochs=1, callbacks=[monitor], num_sanity_val_steps=0).fit(model, loader, loader)
    return monitor.history[-1]["metrics"] if monitor.history else None


def oracle_auroc(scores, labels):
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))


def check_against_oracle(metrics, model, views):
    """Distances and AUROCs from numpy/scipy on the same pairs; ``views`` maps view name -> column slice."""
    batches = pair_batches()
    ids = torch.cat([b["ids"] for b in batches]).numpy()
    labels = torch.cat([b["labels"] for b in batches]).numpy()
    scores = torch.cat([b["scores"] for b in batches]).numpy().astype(np.float64)
    user_w, item_w = model.weights()
    assert metrics["entanglement/pairs"] == len(ids)
    subsets = {label_pattern_name(("a", "b"), (pa, pb)): (labels[:, 0] == pa) & (labels[:, 1] == pb)
               for pa in (True, False) for pb in (True, False)}
    assert set(subsets) == {"a_only", "b_only", "both", "neither"}
    for view, cols in views.items():
        dist = np.linalg.norm(user_w[ids[:, 0], cols].astype(np.float64)
                              - item_w[ids[:, 1] - USERS, cols].astype(np.float64), axis=1)
        assert metrics[f"entanglement/{view}/distance_mean"] == pytest.approx(dist.mean(), rel=1e-6)
        for name, mask in subsets.items():
            assert metrics[f"entanglement/{name}/pairs"] == mask.sum()
            assert metrics[f"entanglement/{view}/{name}/distance_mean"] == pytest.approx(dist[mask].mean(), rel=1e-6)
    agree = labels[:, 0] == labels[:, 1]
    for t, (task, other) in enumerate((("a", "b"), ("b", "a"))):
        o = 1 - t
        expected = {
            "all": np.ones(len(ids), bool),
            "labels_agree": agree,
            "labels_disagree": ~agree,
            f"given_{other}_pos": labels[:, o] > 0.5,
            f"given_{other}_neg": labels[:, o] <= 0.5,
        }
        for name, mask in expected.items():
            assert metrics[f"entanglement/{task}/auroc/{name}"] == pytest.approx(
                oracle_auroc(scores[mask, t], labels[mask, t]), abs=1e-6), (task, name)


def test_shared_table_distances_and_auroc_match_oracles(tmp_path):
    torch.manual_seed(0)
    model = FixedPairs()
    metrics = fit(model, EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS,
                                             strict=True), tmp_path)
    check_against_oracle(metrics, model, {"embedding": slice(None)})
    tags = read_events(tmp_path / "tb" / "version_0").Tags()
    assert {"entanglement/embedding/distance", "entanglement/embedding/a_only/distance",
            "entanglement/embedding/neither/distance"} <= set(tags["histograms"])


def test_stem_chunks_are_separate_views():
    torch.manual_seed(1)
    model = FixedPairs(width=6)
    monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS,
                                  column_groups=["a", "b", "shared"], strict=True)
    metrics = fit(model, monitor)
    check_against_oracle(metrics, model, {"embedding[a]": slice(0, 2), "embedding[b]": slice(2, 4),
                                          "embedding[shared]": slice(4, 6)})


def test_user_and_item_in_separate_tables():
    torch.manual_seed(2)
    model = FixedPairs(separate_tables=True)
    metrics = fit(model, EntanglementMonitor(user_field="user", item_field="item", strict=True))
    check_against_oracle(metrics, model, {"user~item": slice(None)})


def test_bad_setup_and_protocol():
    with pytest.raises(ValueError, match="user_field='nope' matches no field"):
        fit(FixedPairs(), EntanglementMonitor(user_field="nope", item_field="item_id", field_dims=FIELDS))
    monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(FixedPairs(protocol=False), monitor)
    messages = [str(w.message) for w in caught if "EntanglementMonitor" in str(w.message)]
    assert len(messages) == 1 and "task_scores" in messages[0]  # once per epoch, not once per batch
    assert monitor.history == []


class BreaksAtSecondBatch(FixedPairs):
    """The protocol holds for validation batch 0 and breaks from batch 1 on."""

    def validation_step(self, batch, batch_idx):
        out = super().validation_step(batch, batch_idx)
        return out if batch_idx == 0 else {"task_scores": out["task_scores"]}


def test_a_collection_failure_mid_epoch_skips_the_analysis_with_one_warning():
    """Batch 0's pairs were collected before batch 1 broke the protocol: the epoch's analysis is skipped all the
    same (a record of a third of the pairs would be a wrong number), with the base class's one warning."""
    monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(BreaksAtSecondBatch(), monitor)
    messages = [str(w.message) for w in caught if "EntanglementMonitor" in str(w.message)]
    assert len(messages) == 1
    assert ("collecting the validation pairs for the entanglement analysis of epoch 0 failed and is skipped "
            "(ValueError: EntanglementMonitor: validation_step must return") in messages[0]
    assert monitor.history == [] and monitor.failures == 1


def test_the_typed_record_is_the_published_one():
    model = FixedPairs()
    monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS, strict=True)
    fit(model, monitor)
    (record,) = monitor.records
    assert (record.stage, record.epoch, record.tasks, record.views) == ("validation", 0, ["a", "b"], ["embedding"])
    assert record.conflict is None and "conflict" not in monitor.history[0]
    assert record.to_dict() == monitor.history[0]
    assert record.metrics["entanglement/pairs"] == 300  # three validation batches of 100
