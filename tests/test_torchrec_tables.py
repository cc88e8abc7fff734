"""TorchRec's unsharded collections fed KeyedJaggedTensors: tables named by their features, the cross input's
order read by feature, and gradient conflict probed through the collection's lookups (against known answers)."""

import numpy as np
import pytest
import torch
from torch import nn

torchrec = pytest.importorskip("torchrec", reason="torchrec 1.8.0 is installed by scripts/setup.sh")
from torchrec import (EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingCollection, EmbeddingConfig,  # noqa: E402
                      KeyedJaggedTensor)

from helpers import numpy_information_abundance, numpy_row_normalized_singular_values  # noqa: E402
from lightning_recanalysis import EmbeddingSpectrumMonitor, FieldPairCorrelationMonitor, GradientConflictMonitor  # noqa: E402
from lightning_recanalysis.model.field_sets import FieldSet, analysis_units  # noqa: E402
from lightning_recanalysis.model.tables import discover_tables  # noqa: E402

B = 32
CPU = torch.device("cpu")


def _ebc(width=8):
    return EmbeddingBagCollection(device=CPU, tables=[
        EmbeddingBagConfig(name="t_user", embedding_dim=width, num_embeddings=10, feature_names=["user"]),
        # the target item and the behaviour sequence share one table
        EmbeddingBagConfig(name="t_item", embedding_dim=width, num_embeddings=20, feature_names=["item", "hist_item"]),
    ])


def _kjt(seed=0):
    g = torch.Generator().manual_seed(seed)
    user, item = torch.randint(0, 10, (B,), generator=g), torch.randint(0, 20, (B,), generator=g)
    lengths = torch.randint(1, 4, (B,), generator=g)  # behaviour sequences of 1 to 3 items, sum-pooled
    hist = torch.randint(0, 20, (int(lengths.sum()),), generator=g)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["user", "item", "hist_item"], values=torch.cat([user, item, hist]),
        lengths=torch.cat([torch.ones(2 * B, dtype=torch.long), lengths]))


def test_collection_tables_are_found_and_named_by_their_features():
    model = nn.Module()
    model.ebc = _ebc()
    model.ec = EmbeddingCollection(device=CPU, tables=[
        EmbeddingConfig(name="t_cat", embedding_dim=4, num_embeddings=5, feature_names=["category"])])
    tables = discover_tables(model)
    assert [(t.name, [f.name for f in t.fields]) for t in tables] == [
        ("ebc.embedding_bags.t_user", ["user"]), ("ebc.embedding_bags.t_item", ["item+hist_item"]),
        ("ec.embeddings.t_cat", ["category"])]
    units = analysis_units(tables)
    assert isinstance(units[0], FieldSet) and units[0].name == "ebc.embedding_bags"
    assert [f.name for f in units[0].fields] == ["user", "item+hist_item"]
    assert units[1].name == "ec.embeddings.t_cat" and [f.name for f in units[1].fields] == ["category"]


class CrossOverCollection(nn.Module):
    def __init__(self):
        super().__init__()
        self.ebc = _ebc()
        self.cross = nn.Linear(2 + 3 * 8, 2 + 3 * 8)

    def forward(self, kjt, dense):
        kt = self.ebc(kjt)
        return self.cross(torch.cat([dense, kt["hist_item"], kt["user"], kt["item"]], 1))


def test_cross_input_order_read_by_feature_and_the_matrix_and_strength_by_hand():
    torch.manual_seed(0)
    model = CrossOverCollection().double()
    kjt, dense = _kjt(), torch.randn(B, 2, dtype=torch.float64)
    spectrum = EmbeddingSpectrumMonitor(cross_layer="cross", strict=True)
    pairs = FieldPairCorrelationMonitor(["user", "item", "hist_item"], cross_layer="cross", strict=True)
    for monitor in (spectrum, pairs):
        monitor.setup(None, model, "fit")
        monitor.on_train_batch_start(None, model, None, 0)
    model(kjt, dense)
    for monitor in (spectrum, pairs):
        monitor.on_before_backward(None, model, None)
    layout = spectrum._finder.layout
    assert [(s.name, s.field, s.start, s.stop) for s in layout.slots] == [
        ("hist_item", "item+hist_item", 2, 10), ("user", "user", 10, 18), ("item", "item+hist_item", 18, 26)]
    interaction = spectrum.analyse()["interaction"]
    assert interaction["fields"] == ["hist_item", "user", "item"]
    w = model.cross.weight.detach().numpy()
    tables = {"user": model.ebc.embedding_bags["t_user"].weight, "item": model.ebc.embedding_bags["t_item"].weight}
    cols = {"hist_item": (2, 10), "user": (10, 18), "item": (18, 26)}
    source = {"hist_item": "item", "user": "user", "item": "item"}
    for i, a in enumerate(interaction["fields"]):
        for j, b in enumerate(interaction["fields"]):
            block = w[cols[b][0] : cols[b][1], cols[a][0] : cols[a][1]]
            p = tables[source[a]].detach().numpy() @ block.T
            oracle = numpy_information_abundance(numpy_row_normalized_singular_values(p))
            assert interaction["matrix"][i][j] == pytest.approx(oracle, rel=1e-9)
    strength = pairs.learned_strength(model)[0].numpy()
    names = ["user", "item", "hist_item"]
    norms = np.array([[np.linalg.norm(w[cols[b][0] : cols[b][1], cols[a][0] : cols[a][1]]) for b in names]
                      for a in names])
    np.testing.assert_allclose(strength, (norms + norms.T) / 2, rtol=1e-12)


def test_gradient_conflict_through_a_collection_against_known_gradients(tmp_path):
    import lightning.pytorch as pl

    from multitask_helpers import U, U_PERP, W, known_loader, quiet_trainer

    class KnownOverCollection(pl.LightningModule):
        """KnownGradients' losses over an EmbeddingBagCollection: on f0 the tasks are orthogonal, on f1 opposite."""

        task_names = ("a", "b")

        def __init__(self):
            super().__init__()
            self.task_losses = {}
            self.ebc = EmbeddingBagCollection(device=CPU, tables=[
                EmbeddingBagConfig(name="t0", embedding_dim=4, num_embeddings=4, feature_names=["f0"]),
                EmbeddingBagConfig(name="t1", embedding_dim=4, num_embeddings=4, feature_names=["f1"])])

        def training_step(self, batch, batch_idx):
            ids = torch.stack([batch[:, 0], batch[:, 1] - 4])
            kt = self.ebc(KeyedJaggedTensor.from_lengths_sync(
                keys=["f0", "f1"], values=ids.reshape(-1), lengths=torch.ones(ids.numel(), dtype=torch.long)))
            e0, e1 = kt["f0"], kt["f1"]
            self.task_losses = {"a": (e0 @ U).sum() + (e1 @ W).sum(), "b": (e0 @ U_PERP).sum() - 2 * (e1 @ W).sum()}
            return sum(self.task_losses.values())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    monitor = GradientConflictMonitor(every_n_steps=2, strict=True)
    quiet_trainer(tmp_path, max_epochs=1, callbacks=[monitor]).fit(KnownOverCollection(), known_loader(n_batches=6))
    m = monitor.history[-1]["metrics"]
    # The collection's tables are one field set, its fields named by their features (as in the spectrum monitor).
    assert m["conflict/ebc.embedding_bags/f0/a_vs_b/cosine_mean"] == pytest.approx(0.0, abs=1e-12)
    assert m["conflict/ebc.embedding_bags/f1/a_vs_b/cosine_mean"] == pytest.approx(-1.0, abs=1e-12)
    assert m["conflict/ebc.embedding_bags/f1/a_vs_b/norm_ratio"] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("kind", ["CrossNet", "LowRankCrossNet", "LowRankMixtureCrossNet"])
def test_torchrec_cross_networks_give_their_kernel_and_their_input_order(kind):
    from torchrec.modules import crossnet

    torch.manual_seed(0)
    side = 2 + 3 * 8
    layer = {"CrossNet": lambda: crossnet.CrossNet(side, 2),
             "LowRankCrossNet": lambda: crossnet.LowRankCrossNet(side, 2, low_rank=3),
             "LowRankMixtureCrossNet": lambda: crossnet.LowRankMixtureCrossNet(side, 2, num_experts=3, low_rank=3,
                                                                              activation=lambda x: x)}[kind]()
    model = CrossOverCollection().double()
    model.cross = layer.double()
    monitor = EmbeddingSpectrumMonitor(cross_layer="cross", cross_layer_index=1, strict=True)
    monitor.setup(None, model, "fit")
    monitor.on_train_batch_start(None, model, None, 0)
    model(_kjt(), torch.randn(B, 2, dtype=torch.float64))
    monitor.on_before_backward(None, model, None)
    assert [s.name for s in monitor._finder.layout.slots] == ["hist_item", "user", "item"]
    w = monitor._finder.kernel.matrix()
    if kind == "LowRankMixtureCrossNet":  # the gate-free sum over experts of U_e C_e V_e
        u, v, c = layer.U_kernels[1], layer.V_kernels[1], layer.C_kernels[1]
        oracle = sum(u[e] @ c[e] @ v[e] for e in range(3))
    else:  # one layer x_1 = x_0 * (W x_0 + b) + x_0 with b = 0: W x_0 = (x_1 - x_0) / x_0, read off the layer itself
        single = type(layer)(side, 1, **({"low_rank": 3} if kind == "LowRankCrossNet" else {})).double()
        with torch.no_grad():
            for attr in ("kernels", "W_kernels", "V_kernels"):
                if hasattr(layer, attr):
                    getattr(single, attr)[0].copy_(getattr(layer, attr)[1])
        x0 = torch.rand(5, side, dtype=torch.float64) + 0.5
        oracle_x = (single(x0) - x0) / x0
        torch.testing.assert_close(x0 @ w.T, oracle_x.detach(), rtol=1e-10, atol=1e-12)
        return
    torch.testing.assert_close(w, oracle.detach(), rtol=1e-10, atol=1e-12)
