"""EntanglementMonitor's conflict subsets with single-task references: numpy oracle on fixed embeddings,
references as module / checkpoint / run directory, frequent pairs counted from the training batches, clear
errors at setup, and references kept out of the trained model."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from helpers import read_events
from multitask_helpers import ListBatches, quiet_trainer

from lightning_recanalysis import EntanglementMonitor

USERS, ITEMS = 40, 30  # one concatenated table: user rows 0-39, item rows 40-69
FIELDS = {"user_id": USERS, "item_id": ITEMS}


# These models are tiny: more intra-op threads only add contention on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def batches(n_batches, batch_size, seed, skew=False):
    """(user, item) ids with two labels and scores; ``skew`` makes low ids far more frequent."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        if skew:
            users = (torch.rand(batch_size, generator=g) ** 3 * USERS).long()
            items = (torch.rand(batch_size, generator=g) ** 3 * ITEMS).long()
        else:
            users = torch.randint(0, USERS, (batch_size,), generator=g)
            items = torch.randint(0, ITEMS, (batch_size,), generator=g)
        labels = (torch.rand(batch_size, 2, generator=g) > 0.5).float()
        out.append({"ids": torch.stack([users, USERS + items], 1), "labels": labels,
                    "scores": torch.randn(batch_size, 2, generator=g)})
    return out


class Table(pl.LightningModule):
    """A user+item table (``chunks`` views of width 3) that training does not move (lr 0)."""

    task_names = ("like", "finish")

    def __init__(self, chunks=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.task_losses = {}
        self.embedding = nn.Embedding(USERS + ITEMS, 3 * chunks)

    def training_step(self, batch, batch_idx):
        return self.embedding(batch["ids"]).sum() * 0.0

    def validation_step(self, batch, batch_idx):
        self.embedding(batch["ids"])
        return {"task_scores": {"like": batch["scores"][:, 0], "finish": batch["scores"][:, 1]},
                "task_labels": {"like": batch["labels"][:, 0], "finish": batch["labels"][:, 1]}}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def distances(weight, ids, cols=slice(None)):
    w = weight.detach().double().numpy()[:, cols]
    return np.linalg.norm(w[ids[:, 0]] - w[ids[:, 1]], axis=1)


def fit(model, monitor, train, val, tmp_path=None):
    quiet_trainer(tmp_path, max_epochs=1, callbacks=[monitor], num_sanity_val_steps=0).fit(
        model, DataLoader(ListBatches(train), batch_size=None), DataLoader(ListBatches(val), batch_size=None))
    return monitor.history[-1]


def oracle(views, refs, ids, high=60, low=40):
    """Modes, shares and agreements from numpy in float64."""
    a, b = refs["like"], refs["finish"]
    modes = {"like_far_finish_near": (a > np.percentile(a, high)) & (b <= np.percentile(b, low)),
             "finish_far_like_near": (b > np.percentile(b, high)) & (a <= np.percentile(a, low))}
    out = {}
    for view, d in views.items():
        for mode, mask in modes.items():
            top = np.mean(d[mask] > np.percentile(d, high))
            bottom = np.mean(d[mask] <= np.percentile(d, low))
            out[(view, mode)] = (top, bottom)
    return modes, out


@pytest.mark.parametrize("chunks", [1, 3])
def test_conflict_subsets_and_shares_match_numpy(tmp_path, chunks):
    model, like, finish = Table(chunks=chunks, seed=0), Table(seed=1), Table(seed=2)
    train, val = batches(2, 50, seed=0), batches(3, 200, seed=1)
    groups = ["like", "finish", "shared"] if chunks == 3 else None
    monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS,
                                  column_groups=groups, references={"like": like, "finish": finish}, strict=True)
    record = fit(model, monitor, train, val, tmp_path)
    ids = torch.cat([b["ids"] for b in val]).numpy()
    views = ({"embedding": distances(model.embedding.weight, ids)} if chunks == 1 else
             {f"embedding[{g}]": distances(model.embedding.weight, ids, slice(3 * k, 3 * k + 3))
              for k, g in enumerate(groups)})
    refs = {"like": distances(like.embedding.weight, ids), "finish": distances(finish.embedding.weight, ids)}
    modes, shares = oracle(views, refs, ids)
    m = record["metrics"]
    assert m["entanglement/conflict/selected_pairs"] == len(ids)
    for mode, mask in modes.items():
        assert record["conflict"]["modes"][mode]["pairs"] == mask.sum() > 0
        assert m[f"entanglement/conflict/{mode}/fraction"] == pytest.approx(mask.mean())
    for (view, mode), (top, bottom) in shares.items():
        assert m[f"entanglement/conflict/{view}/{mode}/share_top"] == pytest.approx(top, abs=1e-12)
        assert m[f"entanglement/conflict/{view}/{mode}/share_bottom"] == pytest.approx(bottom, abs=1e-12)
        far = mode.split("_far_")[0]
        near = "finish" if far == "like" else "like"
        assert m[f"entanglement/conflict/{view}/{mode}/agreement_{far}"] == pytest.approx(top - bottom, abs=1e-12)
        assert m[f"entanglement/conflict/{view}/{mode}/agreement_{near}"] == pytest.approx(bottom - top, abs=1e-12)
        hist = record["conflict"]["views"][view]["modes"][mode]
        assert sum(hist["conflict"]) == modes[mode].sum() and sum(hist["conflict"]) + sum(hist["rest"]) == len(ids)
    tags = read_events(tmp_path / "tb" / "version_0").Tags()
    view = next(iter(views))
    assert {f"entanglement/conflict/{view}/{mode}/histogram" for mode in modes} <= set(tags["images"])
    assert f"entanglement/conflict/{view}/like_far_finish_near/distance" in tags["histograms"]
    # The references are copies on the CPU, outside the trained model: never optimised, saved or moved.
    assert not any(p is like.embedding.weight for p in model.parameters())
    for ref in monitor.conflict.references.values():
        assert ref.user.device.type == "cpu" and not ref.user.requires_grad and ref.user.shape == (USERS, 3)


def test_references_from_checkpoint_and_run_directory(tmp_path):
    like, finish = Table(seed=1), Table(seed=2)
    torch.save({"state_dict": like.state_dict()}, tmp_path / "like.ckpt")
    (tmp_path / "finish_run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": finish.state_dict()}, tmp_path / "finish_run" / "checkpoints" / "epoch=0.ckpt")
    train, val = batches(1, 50, seed=0), batches(2, 150, seed=3)
    results = []
    for refs in ({"like": like, "finish": finish},
                 {"like": str(tmp_path / "like.ckpt"), "finish": tmp_path / "finish_run"}):
        monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS,
                                      references=refs, strict=True)
        results.append(fit(Table(seed=0), monitor, train, val)["metrics"])
    conflict = [{k: v for k, v in r.items() if k.startswith("entanglement/conflict/")} for r in results]
    assert conflict[0] == conflict[1] and len(conflict[0]) > 10


def test_frequent_pairs_counted_from_training_batches():
    train, val = batches(4, 100, seed=5, skew=True), batches(2, 200, seed=6, skew=True)
    monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", field_dims=FIELDS, strict=True,
                                  references={"like": Table(seed=1), "finish": Table(seed=2)}, frequent_only=True)
    record = fit(Table(seed=0), monitor, train, val)
    ids = torch.cat([b["ids"] for b in train]).numpy()
    user_counts, item_counts = np.bincount(ids[:, 0], minlength=USERS), np.bincount(ids[:, 1] - USERS, minlength=ITEMS)
    frequent_user = user_counts > np.percentile(user_counts[user_counts > 0], 60)
    frequent_item = item_counts > np.percentile(item_counts[item_counts > 0], 60)
    pairs = torch.cat([b["ids"] for b in val]).numpy()
    keep = frequent_user[pairs[:, 0]] & frequent_item[pairs[:, 1] - USERS]
    assert 0 < keep.sum() < len(pairs)
    assert record["metrics"]["entanglement/conflict/selected_pairs"] == keep.sum()
    assert record["conflict"]["validation_pairs"] == len(pairs)


class OtherVocabulary(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(USERS + ITEMS + 5, 3)


def test_missing_or_mismatched_references_fail_at_setup(tmp_path):
    def setup(references, **kwargs):
        monitor = EntanglementMonitor(user_field="user_id", item_field="item_id", references=references,
                                      **{"field_dims": FIELDS, **kwargs})
        monitor.setup(quiet_trainer(), Table(), "fit")

    with pytest.raises(ValueError, match=r"missing \['finish'\]"):
        setup({"like": Table(), "other": Table()})
    with pytest.raises(ValueError, match="two tasks or more"):
        EntanglementMonitor(user_field="user_id", item_field="item_id", references={"like": Table()})
    with pytest.raises(ValueError, match="reference for task 'like' .*add up to 70 rows but the table has 75"):
        setup({"like": OtherVocabulary(), "finish": Table()})
    torch.save({"state_dict": {"other.weight": torch.zeros(USERS + ITEMS, 3)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="has no table embedding.weight"):
        setup({"like": tmp_path / "other.ckpt", "finish": Table()})
    torch.save({"state_dict": {"embedding.weight": torch.zeros(USERS + ITEMS + 1, 3)}}, tmp_path / "big.ckpt")
    with pytest.raises(ValueError, match="another vocabulary"):
        setup({"like": tmp_path / "big.ckpt", "finish": Table()})
    with pytest.raises(ValueError, match="does not exist"):
        setup({"like": tmp_path / "nowhere", "finish": Table()})
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ValueError, match=r"no checkpoint \(\*.ckpt\)"):
        setup({"like": tmp_path / "empty_run", "finish": Table()})
