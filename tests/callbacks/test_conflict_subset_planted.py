"""The conflict subsets on the synthetic multi-task demo: single-task references find the planted disagreeing
user-item pairs, STEM's task chunks reproduce the single-task geometries and MMoE's shared embedding cannot, and
the monitor with references leaves training untouched."""

import lightning.pytorch as pl
import pytest
import torch

from multitask_helpers import quiet_trainer

from demo_models.data.batches import split
from demo_models.multitask import build, demo_data
from demo_models.references import train_references
from lightning_recanalysis.model.reference import load_reference
from lightning_recanalysis.functional.conflict_subset import conflict_subsets
from lightning_recanalysis.report.compare_conflict import own_task_agreement
from lightning_recanalysis.model.tables import discover_tables


# These models are tiny: more intra-op threads only add contention on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The demo's two single-task references (a Shared-Bottom per task, 4 epochs), as run directories."""
    torch.set_num_threads(1)
    return train_references("synthetic-pairs", 0, tmp_path_factory.mktemp("references"))


@pytest.mark.slow
def test_conflict_subset_recovers_the_planted_pairs(references):
    data = demo_data("synthetic-pairs", 0)
    _, val = split({"features": data.features, "planted": data.planted_pairs}, 0.2, 0)
    model = build("shared_bottom", "synthetic-pairs", 0, monitors=False, task="click").module
    table = discover_tables(model, field_dims=dict(zip(data.field_names, data.field_dims)))[0]
    user, item = [(table, f) for f in table.fields if f.name in ("user_id", "item_id")]
    refs = {t: load_reference(path, t, user, item, {}, "test") for t, path in references.items()}
    users, items = val["features"][:, 0], val["features"][:, 1]
    masks = conflict_subsets({t: r.distances(users, items) for t, r in refs.items()})
    # planted +1: click near / purchase far (click's logit up, purchase's down); -1 the opposite.
    for mode, plant in (("purchase_far_click_near", 1), ("click_far_purchase_near", -1)):
        truth = val["planted"] == plant
        found = masks[mode]
        precision = float((found & truth).sum() / found.sum())
        recall = float((found & truth).sum() / truth.sum())
        base_rate = float(truth.to(torch.float64).mean())
        print(f"{mode}: {int(found.sum())} pairs, precision {precision:.2f} (planted share {base_rate:.2f}), "
              f"recall {recall:.2f}")
        assert precision > 2.5 * base_rate and recall > 0.5


@pytest.mark.slow
def test_stem_chunks_reproduce_single_task_geometry_better_than_mmoe(references):
    agreement = {}
    for model in ("mmoe", "stem"):
        pl.seed_everything(0, verbose=False)
        experiment = build(model, "synthetic-pairs", 0, monitors=True, references=references)
        monitor = experiment.callbacks[1]
        monitor.strict = True
        quiet_trainer(max_epochs=experiment.max_epochs, callbacks=[monitor], num_sanity_val_steps=0).fit(
            experiment.module, experiment.train_loader, experiment.val_loader)
        agreement[model] = own_task_agreement(monitor.history[-1]["conflict"])
        print(model, {t: round(a, 3) for t, a in agreement[model].items()})
    # A shared view's agreements with the two tasks are opposite numbers: it reproduces at most one geometry.
    assert agreement["mmoe"]["click"] == pytest.approx(-agreement["mmoe"]["purchase"], abs=1e-9)
    assert min(agreement["stem"].values()) > 0.15
    assert min(agreement["stem"].values()) > min(agreement["mmoe"].values()) + 0.15


def _final_weights(references, with_monitor: bool) -> dict[str, torch.Tensor]:
    pl.seed_everything(3, verbose=False)
    experiment = build("mmoe", "synthetic-pairs", 3, monitors=True, n_samples=3000, references=references, dropout=0.1)
    monitor = experiment.callbacks[1]
    monitor.strict, monitor.conflict.frequent_only = True, True
    quiet_trainer(max_epochs=2, callbacks=[monitor] if with_monitor else [], num_sanity_val_steps=1).fit(
        experiment.module, experiment.train_loader, experiment.val_loader)
    if with_monitor:
        assert 0 < monitor.history[-1]["metrics"]["entanglement/conflict/selected_pairs"] < 600
    return {k: v.detach().clone() for k, v in experiment.module.state_dict().items()}


@pytest.mark.slow
def test_monitor_with_references_never_changes_training(references):
    without, with_ = _final_weights(references, False), _final_weights(references, True)
    assert without.keys() == with_.keys()
    assert [k for k in without if not torch.equal(without[k], with_[k])] == []
