"""The multi-task monitors on the demo models: planted conflict found, STEM's chunks apart, training untouched."""

import lightning.pytorch as pl
import pytest
import torch

from multitask_helpers import quiet_trainer, small_multitask

from demo_models.multitask import monitors_for


# These models are tiny: more intra-op threads only add contention on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _monitors(model, data, **conflict_options):
    return monitors_for(model, data.field_names, data.field_dims, data.tasks, data.user_field, data.item_field,
                        strict=True, **conflict_options)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["shared_bottom", "mmoe"])
def test_planted_conflict_is_found(model):
    """On the synthetic data the tasks conflict on 'creative' only: negative cosine there, positive elsewhere."""
    pl.seed_everything(0, verbose=False)
    module, train, _, data = small_multitask(model, n_samples=12_000)
    conflict = _monitors(model, data, every_n_steps=3)[0]
    quiet_trainer(max_epochs=3, callbacks=[conflict]).fit(module, train)
    metrics = conflict.history[-1]["metrics"]
    cosine = {f: metrics[f"conflict/embedding/{f}/click_vs_purchase/cosine_mean"] for f in data.field_names}
    assert data.conflict_field == "creative"
    assert cosine["creative"] < -0.1, cosine
    assert all(c > 0 for f, c in cosine.items() if f != "creative"), cosine
    assert metrics["conflict/embedding/creative/click_vs_purchase/negative_fraction"] > 0.5


def _final_weights(with_monitors: bool) -> dict[str, torch.Tensor]:
    pl.seed_everything(3, verbose=False)
    # Dropout makes training draw random numbers every step: a monitor that drew any would shift them all.
    module, train, val, data = small_multitask("mmoe", n_samples=3000, seed=3, dropout=0.1)
    callbacks = _monitors("mmoe", data, every_n_steps=1) if with_monitors else []
    quiet_trainer(max_epochs=2, callbacks=callbacks, num_sanity_val_steps=1).fit(module, train, val)
    if with_monitors:
        assert callbacks[0].history[-1]["measured_steps"] == len(train)  # it did probe every step
        assert callbacks[1].history[-1]["metrics"]["entanglement/pairs"] == 600
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_monitors_never_change_training():
    without, with_ = _final_weights(False), _final_weights(True)
    assert without.keys() == with_.keys()
    different = [k for k in without if not torch.equal(without[k], with_[k])]
    assert different == []


@pytest.mark.slow
def test_stem_chunks_are_discovered_and_analysed_separately():
    pl.seed_everything(0, verbose=False)
    module, train, val, data = small_multitask("stem", n_samples=3000)
    conflict, entanglement = _monitors("stem", data, every_n_steps=2)
    quiet_trainer(max_epochs=1, callbacks=[conflict, entanglement], num_sanity_val_steps=0).fit(module, train, val)
    views = ["embedding[click]", "embedding[purchase]", "embedding[shared]"]
    assert [v.name for v in conflict._views] == views
    m = conflict.history[-1]["metrics"]
    # By construction (gates read their own and the shared chunk; other tasks' experts detached), a task's loss
    # never reaches the other task's chunk: its gradient there is exactly zero, so no cosine exists.
    assert m["conflict/embedding[click]/purchase/gradient_norm"] == 0.0
    assert m["conflict/embedding[purchase]/click/gradient_norm"] == 0.0
    assert m["conflict/embedding[purchase]/click_vs_purchase/norm_ratio"] == 0.0
    assert not any(k.startswith(("conflict/embedding[click]/", "conflict/embedding[purchase]/"))
                   and k.endswith("cosine_mean") for k in m)
    # The shared chunk is trained by both tasks and measured as usual, field by field.
    assert all(f"conflict/embedding[shared]/{f}/click_vs_purchase/cosine_mean" in m for f in data.field_names)
    e = entanglement.history[-1]
    assert e["views"] == views
    assert all(f"entanglement/{v}/purchase_only/distance_mean" in e["metrics"] for v in views)
