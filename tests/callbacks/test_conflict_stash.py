"""The gradient probe's stash: an epoch's probes keep their row gradients and their Grams are formed in one pass.

Oracles: the same fit flushed probe by probe (a stash too small for one probe), and Grams worked out by hand.
"""

import numpy as np
import pytest
import torch
from multitask_helpers import KNOWN_FIELDS, KnownGradients, known_loader, quiet_trainer

from lightning_recanalysis import GradientConflictMonitor
from lightning_recanalysis.model import gradient_probe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_probes_flushed_one_by_one_give_the_grams_of_one_flush(monkeypatch):
    """The stash is a saving only: with a stash too small for one probe (each flushed alone) every published
    number is the same as with all of an epoch's probes flushed together."""
    def fit():
        monitor = GradientConflictMonitor(every_n_steps=1, field_dims=KNOWN_FIELDS, strict=True)
        quiet_trainer(max_epochs=2, callbacks=[monitor]).fit(KnownGradients(), known_loader(n_batches=6))
        return monitor.history

    together = fit()
    monkeypatch.setattr(gradient_probe, "STASH_BYTES", 1)
    one_by_one = fit()
    assert [r["measured_steps"] for r in together] == [r["measured_steps"] for r in one_by_one] == [6, 6]
    for a, b in zip(together, one_by_one):
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-12, abs=1e-15)


def test_a_row_looked_up_in_two_probes_is_summed_within_each_and_absent_tasks_are_nan():
    """Two probes on the known table (fields f0 = rows 0-3, f1 = rows 4-7), by hand:

    - probe 1 looks up rows 1 and 5 once each, tasks a and c only (b absent): per field <a,a> = 4 (a row of four
      ones), <a,c> = -8, <c,c> = 16 (c: four minus twos); b's row and column NaN; the table: twice that;
    - probe 2 looks up row 1 twice, tasks a, b, c with gradients 1, 3, -1 each time: row 1 sums 2, 6, -2, so
      field f0's Gram is 4 x [[4, 12, -4], [12, 36, -12], [-4, -12, 4]]; field f1 has no row: zero.

    Row 1 is in both probes: summed across them, probe 2's f0 would hold probe 1's gradient too."""
    monitor = GradientConflictMonitor(every_n_steps=1, field_dims=KNOWN_FIELDS, tasks=["a", "b", "c"])

    class Module(KnownGradients):
        task_names = ("a", "b", "c")

    monitor.setup(quiet_trainer(max_epochs=1), Module(), "fit")
    probe = monitor._probe
    module = probe.modules[0][0]

    def lookup(ids):
        ids = torch.tensor([ids])
        return [(0, gradient_probe.Lookup(module, ids, module(ids)))]

    ones = torch.ones(1, 2, 4)
    probe._stash_probe(lookup([1, 5]), {"a": (ones,), "c": (-2 * ones,)})
    probe._stash_probe(lookup([1, 1]), {"a": (ones,), "b": (3 * ones,), "c": (-ones,)})
    (gram,) = probe.flush()
    assert gram.shape == (2, 3, 3, 3)  # two probes; fields f0, f1, the whole table; three tasks
    nan = float("nan")
    first = np.array([[4.0, nan, -8.0], [nan, nan, nan], [-8.0, nan, 16.0]])
    np.testing.assert_array_equal(gram[0].numpy(), [first, first, 2 * first])
    second = 4 * np.array([[4.0, 12.0, -4.0], [12.0, 36.0, -12.0], [-4.0, -12.0, 4.0]])
    np.testing.assert_array_equal(gram[1].numpy(), [second, np.zeros((3, 3)), second])
    assert probe.flush() == [None]  # the stash is empty after a flush


def test_field_gradient_gram_needs_both_probes_and_their_number():
    from lightning_recanalysis.functional import field_gradient_gram

    rows, grads = torch.tensor([0, 5]), torch.ones(2, 2, 3)
    with pytest.raises(ValueError, match="both probes and num_probes"):
        field_gradient_gram(rows, grads, [0, 4], probes=torch.tensor([0, 1]))
    per_probe = field_gradient_gram(rows, grads, [0, 4], probes=torch.tensor([0, 1]), num_probes=2)
    assert per_probe.shape == (2, 2, 2, 2)
    torch.testing.assert_close(per_probe.sum(0), field_gradient_gram(rows, grads, [0, 4]))
