"""The gradient probe's saving in training: one task's gradient taken from the training's own backward.

When the training loss is ``sum_t w_t L_t``, the probe differentiates ``T - 1`` tasks and forms the last as
``(g_L - sum w_t g_t) / w_d``. Oracles: the known gradients of :class:`KnownGradients` (hand-derived), the probe
that differentiates every task itself (the same fit with the saving switched off), and the graph weights below
read by hand from the expressions.
"""

import warnings

import numpy as np
import pytest
import torch
from multitask_helpers import KNOWN_FIELDS, KnownGradients, known_batches, known_loader, numpy_table_cosine, \
    quiet_trainer, small_multitask

from lightning_recanalysis import GradientConflictMonitor
from lightning_recanalysis.model import gradient_probe
from lightning_recanalysis.model.loss_weights import task_loss_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def grad_calls(monkeypatch):
    """The number of ``torch.autograd.grad`` calls the probe makes, per probed step, in order."""
    calls: list[int] = []
    real = torch.autograd.grad
    measure = gradient_probe.GradientProbe.measure

    def counting_grad(*args, **kwargs):
        calls[-1] += 1
        return real(*args, **kwargs)

    def counting_measure(self, *args, **kwargs):
        calls.append(0)
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(gradient_probe.torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(gradient_probe.GradientProbe, "measure", counting_measure)
    return calls


def _two_losses():
    x = torch.linspace(-1.0, 1.0, 3, requires_grad=True)
    return x, {"click": (x * 2).sum(), "buy": x.pow(2).sum()}


@pytest.mark.parametrize("expression, expected", [
    (lambda c, b, x: c + b, {"click": 1.0, "buy": 1.0}),
    (lambda c, b, x: sum([c, b]), {"click": 1.0, "buy": 1.0}),  # Python's sum starts from the int 0
    (lambda c, b, x: (0.3 * c - 2 * b + 5.0) / 4, {"click": 0.075, "buy": -0.5}),
    (lambda c, b, x: torch.stack([c, b]).mean(), {"click": 0.5, "buy": 0.5}),
    (lambda c, b, x: torch.cat([c.view(1), b.view(1)]).sum() * torch.tensor([8.0]), {"click": 8.0, "buy": 8.0}),
    (lambda c, b, x: torch.add(c, -b, alpha=3) + c.double(), {"click": 2.0, "buy": -3.0}),
    (lambda c, b, x: c, {"click": 1.0, "buy": 0.0}),
])
def test_task_loss_weights_read_from_the_graph(expression, expected):
    x, losses = _two_losses()
    weights = task_loss_weights(expression(losses["click"], losses["buy"], x), losses)
    assert weights == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("expression", [
    lambda c, b, x: c * b,  # a product of two losses
    lambda c, b, x: c + b + x.pow(3).sum(),  # a term that is not a task loss
    lambda c, b, x: torch.stack([c, b]) @ torch.tensor([1.0, 2.0]),  # weights of several elements
    lambda c, b, x: (torch.stack([c, b]) * torch.tensor([1.0, 2.0])).sum(),
    lambda c, b, x: c / b,
    lambda c, b, x: (c + b).exp(),
])
def test_task_loss_weights_refuse_what_is_not_a_constant_weighted_sum(expression):
    x, losses = _two_losses()
    assert task_loss_weights(expression(losses["click"], losses["buy"], x), losses) is None


def test_the_same_tensor_for_two_tasks_is_refused():
    x, losses = _two_losses()
    assert task_loss_weights(losses["click"] * 2, {"a": losses["click"], "b": losses["click"]}) is None


def test_known_gradients_with_one_task_from_the_training_backward(tmp_path, grad_calls):
    """A weighted total: after the first probe (which differentiates both tasks and sees both reach the table),
    each probe differentiates one task; the known answers hold to float32 rounding."""
    monitor = GradientConflictMonitor(every_n_steps=2, field_dims=KNOWN_FIELDS, strict=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[monitor])
    trainer.fit(KnownGradients(loss_weights=(0.5, -3.0)), known_loader(n_batches=6))
    assert grad_calls == [2, 1, 1, 1, 1, 1]
    assert [r["measured_steps"] for r in monitor.history] == [3, 3]
    m = monitor.history[-1]["metrics"]
    assert m["conflict/embedding/f0/a_vs_b/cosine_mean"] == pytest.approx(0.0, abs=1e-6)
    assert m["conflict/embedding/f1/a_vs_b/cosine_mean"] == pytest.approx(-1.0, abs=1e-6)
    assert m["conflict/embedding/f1/a_vs_b/negative_fraction"] == 1.0
    assert m["conflict/embedding/f1/a_vs_b/norm_ratio"] == pytest.approx(0.5, rel=1e-6)
    expected = np.mean([numpy_table_cosine(b) for b in known_batches(6)[0::2]])
    assert m["conflict/embedding/a_vs_b/cosine_mean"] == pytest.approx(expected, abs=1e-6)


def test_a_total_with_other_terms_keeps_every_task_differentiated(tmp_path, grad_calls):
    monitor = GradientConflictMonitor(every_n_steps=2, field_dims=KNOWN_FIELDS, strict=True)
    quiet_trainer(max_epochs=1, callbacks=[monitor]).fit(KnownGradients(), known_loader(n_batches=6))
    assert grad_calls == [2, 2, 2]  # total = L_a + L_b + 0 * bias: the bias term is not a task loss


def test_an_unreached_task_keeps_every_task_differentiated_and_warned(grad_calls):
    """Task c never reaches the table, so no probe leaves a task to the backward, and c is warned about."""
    class Weighted(KnownGradients):
        def training_step(self, batch, batch_idx):
            super().training_step(batch, batch_idx)
            return sum(self.task_losses.values())  # a plain sum of the three task losses

    monitor = GradientConflictMonitor(every_n_steps=2, field_dims=KNOWN_FIELDS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(max_epochs=1, callbacks=[monitor]).fit(Weighted(extra_task=True), known_loader(n_batches=6))
    assert grad_calls == [3, 3, 3]
    assert any("task 'c' does not reach" in str(w.message) for w in caught)
    assert monitor.history[-1]["problems"]["unreached:c"] == 3


@pytest.mark.parametrize("model", ["mmoe", "stem"])
def test_derived_probe_equals_the_probe_of_every_task(model, monkeypatch):
    """A non-linear model: the fit with the saving and the fit without it train identically (the monitors never
    change training), so every probe's Gram, hence every published number, must agree to float32 rounding."""
    def fit(derive: bool):
        if not derive:
            monkeypatch.setattr(gradient_probe.GradientProbe, "_derived_task", lambda self, *args: None)
        torch.manual_seed(0)
        module, train, _, data = small_multitask(model, n_samples=3000)
        groups = [*data.tasks, "shared"] if model == "stem" else None
        monitor = GradientConflictMonitor(every_n_steps=3, column_groups=groups,
                                          field_dims=dict(zip(data.field_names, data.field_dims)))
        quiet_trainer(max_epochs=2, callbacks=[monitor]).fit(module, train)
        monkeypatch.undo()
        return monitor.history

    derived, full = fit(True), fit(False)
    assert [r["measured_steps"] for r in derived] == [r["measured_steps"] for r in full]
    for a, b in zip(derived, full):
        assert a["metrics"].keys() == b["metrics"].keys()
        for tag, value in b["metrics"].items():
            if tag.endswith("negative_fraction"):  # a count of signs: a cosine at 0 +- 1e-7 may flip
                assert a["metrics"][tag] == pytest.approx(value, abs=0.1), tag
            else:
                assert a["metrics"][tag] == pytest.approx(value, rel=1e-4, abs=1e-6), tag


def test_probes_flushed_one_by_one_give_the_grams_of_one_flush(monkeypatch):
    """The stash is a saving only: with a stash too small for one probe (each flushed alone) every published
    number is the same as with all of an epoch's probes flushed together."""
    def fit():
        monitor = GradientConflictMonitor(every_n_steps=1, field_dims=KNOWN_FIELDS, strict=True)
        quiet_trainer(max_epochs=2, callbacks=[monitor]).fit(KnownGradients(loss_weights=(1.0, 1.0)),
                                                            known_loader(n_batches=6))
        return monitor.history

    together = fit()
    monkeypatch.setattr(gradient_probe, "STASH_BYTES", 1)
    one_by_one = fit()
    assert [r["measured_steps"] for r in together] == [r["measured_steps"] for r in one_by_one] == [6, 6]
    for a, b in zip(together, one_by_one):
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-12, abs=1e-15)


def test_a_derived_probe_whose_gradient_is_not_finite_is_dropped_at_the_flush():
    """Two stashed probes on the known table; the second carries a non-finite flag (a skipped AMP step): the
    flush gives the first probe's Grams alone, by hand: rows 1 and 5 looked up once each, task b absent."""
    monitor = GradientConflictMonitor(every_n_steps=1, field_dims=KNOWN_FIELDS, tasks=["a", "b", "c"])

    class Module(KnownGradients):
        task_names = ("a", "b", "c")

    monitor.setup(quiet_trainer(max_epochs=1), Module(), "fit")
    probe = monitor._probe
    assert len(probe.tables) == 1
    module = probe.modules[0][0]
    ids = torch.tensor([[1, 5]])
    out = module(ids)
    g_a, g_c = torch.ones_like(out), torch.full_like(out, -2.0)
    lookups = [(0, gradient_probe.Lookup(module, ids, out))]
    probe._stash_probe(lookups, {"a": (g_a,), "c": (g_c,)})
    probe._stash_probe(lookups, {"a": (g_a,), "c": (g_c,)}, finite=torch.tensor(False))
    (gram,), dropped = probe.flush()
    assert dropped == 1 and gram.shape == (1, 3, 3, 3)  # one probe; fields f0, f1, the whole table; 3 tasks
    nan = float("nan")
    field = [[4.0, nan, -8.0], [nan, nan, nan], [-8.0, nan, 16.0]]  # one row of 4 ones / of 4 minus twos
    np.testing.assert_array_equal(gram[0].numpy(), [field, field, np.array(field) * 2])
    assert probe.flush() == ([None], 0)  # the stash is empty after a flush
