"""Fields in any tables and cross layers of any form: the field order found on a batch against the true order, the
per-feature DCNv2 against the concatenated one holding the same weights, kernels as tensors and low-rank mixtures
against float64 hand computations, and the errors of an ambiguous or unreadable cross input."""

import numpy as np
import pytest
import torch
from torch import nn

from helpers import numpy_information_abundance, numpy_row_normalized_singular_values
from lightning_recanalysis import EmbeddingSpectrumMonitor, FieldPairCorrelationMonitor
from lightning_recanalysis.model.cross.finder import CrossFinder
from lightning_recanalysis.model.cross.kernels import resolve_cross_kernel
from lightning_recanalysis.model.field_sets import FieldSet, analysis_units
from lightning_recanalysis.model.tables import discover_tables

B = 64


class Toy(nn.Module):
    """Tables in a ModuleDict; the cross input is built by ``plan``: table names and dense column counts, in order."""

    def __init__(self, tables: dict, plan: list, kernel: str = "linear", shared: dict | None = None) -> None:
        super().__init__()
        self.emb = nn.ModuleDict({n: nn.Embedding(rows, width) for n, (rows, width) in tables.items()})
        for alias, owner in (shared or {}).items():  # a second module on the same weight
            self.emb[alias] = nn.Embedding(*tables[owner])
            self.emb[alias].weight = self.emb[owner].weight
        self.plan = plan
        side = sum(p if isinstance(p, int) else self.emb[p].embedding_dim for p in plan)
        if kernel == "linear":
            self.cross = nn.Linear(side, side)
        else:  # DeepCTR's CrossNet('matrix'): kernels [L, D, D]
            from demo_models.dcnv2_per_feature import CrossNetKernels

            self.cross = CrossNetKernels(side, 2)

    def forward(self, ids: dict) -> torch.Tensor:
        parts, dtype = [], next(self.emb.parameters()).dtype
        for p in self.plan:
            if isinstance(p, int):
                parts.append(torch.randn(B, p, dtype=dtype))  # dense features
            else:
                parts.append(self.emb[p](ids[p]))
        return self.cross(torch.cat(parts, 1))


def _ids(model: Toy, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randint(0, m.num_embeddings, (B,), generator=g) for n, m in model.emb.items()}


def _found(model: Toy, spec="cross", ids=None, **kwargs):
    units = analysis_units(discover_tables(model))
    finder = CrossFinder(spec, owner="test", **kwargs)
    finder.setup(model, units)
    finder.start()
    model(ids if ids is not None else _ids(model))
    finder.finish()
    return finder, units


def _columns(finder):
    return [(s.name, s.start, s.stop) for s in finder.layout.slots]


def test_order_found_with_dense_before_between_after_and_a_shuffled_field_order():
    model = Toy({"a": (5, 4), "b": (7, 4), "c": (9, 4)}, [3, "c", "a", 2, "b", 1])
    finder, units = _found(model)
    assert _columns(finder) == [("c", 3, 7), ("a", 7, 11), ("b", 13, 17)]
    assert finder.layout.dense_ranges() == [(0, 3), (11, 13), (17, 18)]
    assert [u.name for u in units] == ["emb"] and isinstance(units[0], FieldSet)
    assert "dense [0:3] | c [3:7] | a [7:11] | dense [11:13] | b [13:17] | dense [17:18]" in finder.describe()


def test_order_found_with_a_table_shared_by_two_features():
    # One module looked up twice (target item and last behaviour), and a second module tied to the same weight.
    model = Toy({"user": (10, 4), "item": (20, 4)}, ["item", "user", "hist", "item"], shared={"hist": "item"})
    ids = _ids(model)
    ids["hist"] = (ids["item"] + 3) % 20
    finder, units = _found(model, ids=ids)
    assert [f.name for f in units[0].fields] == ["user", "item+hist"]  # analysed once, named by both
    assert _columns(finder) == [("item", 0, 4), ("user", 4, 8), ("hist", 8, 12), ("item#2", 12, 16)]
    assert [s.field for s in finder.layout.slots] == ["item+hist", "user", "item+hist", "item+hist"]


def test_order_found_with_fields_of_two_widths():
    model = Toy({"a": (5, 8), "b": (7, 8), "c": (9, 4), "d": (11, 4)}, ["c", "a", 5, "d", "b"])
    finder, units = _found(model)
    assert [u.name for u in units] == ["emb[K=8]", "emb[K=4]"]
    assert _columns(finder) == [("c", 0, 4), ("a", 4, 12), ("d", 17, 21), ("b", 21, 29)]
    assert [s.unit for s in finder.layout.slots] == ["emb[K=4]", "emb[K=8]", "emb[K=4]", "emb[K=8]"]


def test_identical_rows_of_two_fields_are_an_ambiguity_error_that_says_how_to_give_the_order():
    model = Toy({"a": (5, 4), "b": (5, 4)}, ["a", "b"])
    with torch.no_grad():
        model.emb["b"].weight.copy_(model.emb["a"].weight)
    ids = _ids(model)
    ids["b"] = ids["a"]
    with pytest.raises(ValueError, match=r"several fields.*emb/a, emb/b.*cross_fields="):
        _found(model, ids=ids)
    finder, _ = _found(model, ids=ids, cross_fields=["b", "a"])  # given: no batch needed, no error
    assert _columns(finder) == [("b", 0, 4), ("a", 4, 8)] and finder.layout.found == "given"
    with pytest.raises(ValueError, match=r"cover 12 columns but the cross layer's input has 8"):
        _found(model, cross_fields=["b", 4, "a"])
    with pytest.raises(ValueError, match=r"names 'c', which is not a field.*\['a', 'b'"):
        _found(model, cross_fields=["c", "a"])


def test_an_input_that_cannot_be_matched_names_the_fields_found_and_the_columns_left():
    model = Toy({"a": (5, 4), "b": (7, 4)}, ["a", "b", 3])
    model.forward = lambda ids: model.cross(torch.cat([model.emb["a"](ids["a"]), 2 * model.emb["b"](ids["b"]),
                                                       torch.randn(B, 3)], 1))
    with pytest.raises(ValueError, match=r"holds 1 looked-up field\(s\) \(\['a'\]\); columns left unmatched: \[4:11\]"):
        _found(model)
    with pytest.warns(RuntimeWarning, match="no cross layer's input holds"):  # 'auto' skips, with a warning
        assert _found(model, spec="auto")[0].layout is None
    assert _found(model, spec="auto", quiet_auto=True)[0].layout is None  # the spectrum monitor's: a log line


def _numpy_interaction(tables, weight, slots):
    w = weight.detach().double().numpy()
    out = np.zeros((len(slots), len(slots)))
    for i, (table, a) in enumerate(zip(tables, slots)):
        for j, b in enumerate(slots):
            p = table.detach().double().numpy() @ w[b[0] : b[1], a[0] : a[1]].T
            out[i, j] = numpy_information_abundance(numpy_row_normalized_singular_values(p))
    return out


def test_parameter_kernel_with_dense_features_gives_the_hand_computed_matrix():
    torch.manual_seed(0)
    model = Toy({"a": (30, 4), "b": (40, 4), "c": (50, 4)}, [2, "b", "c", 3, "a"], kernel="tensor").double()
    monitor = EmbeddingSpectrumMonitor(cross_layer="cross.kernels", strict=True)
    monitor.setup(None, model, "fit")
    monitor.on_train_batch_start(None, model, None, 0)
    model(_ids(model))
    monitor.on_before_backward(None, model, None)
    interaction = monitor.analyse()["interaction"]
    assert interaction["fields"] == ["b", "c", "a"] and interaction["view"] == "emb"
    assert "cross.kernels[0] of [L, D, D]" in interaction["kernel"]
    tables = [model.emb[n].weight for n in "bca"]
    oracle = _numpy_interaction(tables, model.cross.kernels[0], [(2, 6), (6, 10), (13, 17)])
    np.testing.assert_allclose(interaction["matrix"], oracle, rtol=1e-9, atol=1e-12)


def test_low_rank_mixture_kernel_is_the_gate_free_sum_of_its_experts():
    g = torch.Generator().manual_seed(1)
    model = nn.Module()
    model.mix = nn.Module()  # DeepCTR's CrossNetMix: U, V [L, E, D, r], C [L, E, r, r]
    model.mix.U_list = nn.Parameter(torch.randn(2, 3, 12, 2, generator=g))
    model.mix.V_list = nn.Parameter(torch.randn(2, 3, 12, 2, generator=g))
    model.mix.C_list = nn.Parameter(torch.randn(2, 3, 2, 2, generator=g))
    kernel = resolve_cross_kernel(model, "mix", layer=1)
    u, v, c = (t.detach().double().numpy()[1] for t in (model.mix.U_list, model.mix.V_list, model.mix.C_list))
    oracle = sum(u[e] @ c[e] @ v[e].T for e in range(3))
    np.testing.assert_allclose(kernel.matrix().double().numpy(), oracle, rtol=1e-5, atol=1e-5)
    assert "gate-free sum over experts" in kernel.form
    with pytest.raises(ValueError, match="Square linear layers of the model"):
        resolve_cross_kernel(model, "mix.nothing")


def _dcnv2_pair(tmp_dims=(4, 12, 40, 100)):
    from demo_models.dcnv2 import DCNv2
    from demo_models.dcnv2_per_feature import DCNv2PerFeature

    torch.manual_seed(2)
    names = [f"F{i}" for i in range(len(tmp_dims))]
    concatenated = DCNv2(list(tmp_dims), embed_dim=8, cross_layers=2, mlp_dims=(8,)).double()
    per_feature = DCNv2PerFeature.from_concatenated(concatenated, names).double()
    x = torch.stack([torch.randint(0, d, (B,)) for d in tmp_dims], 1)
    return concatenated, per_feature, names, x


def test_per_feature_and_concatenated_dcnv2_with_the_same_weights_give_the_same_analyses():
    concatenated, per_feature, names, x = _dcnv2_pair()
    concatenated.eval(), per_feature.eval()
    assert torch.allclose(concatenated(x), per_feature(x), rtol=1e-12)  # the same network
    dims = dict(zip(names, concatenated.hparams.field_dims))
    results = []
    for model, monitor in ((concatenated, EmbeddingSpectrumMonitor(field_dims=dims, strict=True)),
                           (per_feature, EmbeddingSpectrumMonitor(strict=True))):
        monitor.setup(None, model, "fit")
        monitor.on_train_batch_start(None, model, None, 0)
        model(x)
        monitor.on_before_backward(None, model, None)
        results.append(monitor.analyse())
    (view_c,), (view_p,) = results[0]["views"].values(), results[1]["views"].values()
    assert list(results[1]["views"]) == ["embedding_dict"] and list(view_p["fields"]) == names
    for name in names:
        assert view_p["fields"][name]["information_abundance"] == pytest.approx(
            view_c["fields"][name]["information_abundance"], rel=1e-9, abs=1e-9)
    assert results[1]["interaction"]["fields"] == names
    np.testing.assert_allclose(results[1]["interaction"]["matrix"], results[0]["interaction"]["matrix"],
                               rtol=1e-9, atol=1e-9)
    strengths = []
    for model in (concatenated, per_feature):
        monitor = FieldPairCorrelationMonitor(names, field_dims=list(dims.values()), strict=True)
        monitor.setup(None, model, "fit")
        monitor.on_train_batch_start(None, model, None, 0)
        model(x)
        monitor.on_before_backward(None, model, None)
        strengths.append(monitor.learned_strength(model)[0].numpy())
    np.testing.assert_allclose(strengths[1], strengths[0], rtol=1e-9, atol=1e-12)


def test_a_per_feature_model_gets_one_heatmap_and_one_ia_chart_for_its_n_fields(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from helpers import read_events

    concatenated, per_feature, names, x = _dcnv2_pair()
    per_feature = per_feature.float()
    features = torch.cat([x] * 4)
    loader = torch.utils.data.DataLoader(
        [{"features": features[i], "label": float(features[i, 0] == features[i, 1] % 4)} for i in range(len(features))],
        batch_size=64)
    monitor = EmbeddingSpectrumMonitor(strict=True)
    trainer = pl.Trainer(max_epochs=1, logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
                         callbacks=[monitor], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(per_feature, loader)
    tags = read_events(tmp_path / "run" / "version_0").Tags()
    assert [t for t in tags["images"] if t.endswith("spectrum_heatmap")] == ["collapse/embedding_dict/spectrum_heatmap"]
    assert [t for t in tags["images"] if t.endswith("/information_abundance_vs_init")] == [
        "collapse/embedding_dict/information_abundance_vs_init"]
    charts = monitor.dashboard_layout()
    assert list(charts) == ["collapse: information abundance per field", "collapse: IA / IA at initialisation",
                            "collapse: interaction, mean IA of each field's sub-embeddings"]
    # The initial interaction matrix, computed on the first batch before the first step, is logged at step 0.
    assert monitor.history[0]["stage"] == "init" and monitor.history[0]["interaction"]["fields"] == names
    events = read_events(tmp_path / "run" / "version_0")
    assert [e.step for e in events.Scalars("collapse/embedding_dict/interaction/F0/mean_information_abundance")] == [0, 4]
    # The inventory, logged again once the order is read: the layout the matrix is computed over.
    (tag,) = [t for t in events.Tags()["tensors"] if t.startswith("collapse/inventory")]
    text = events.Tensors(tag)[-1].tensor_proto.string_val[0].decode()
    assert "F0 [0:8] | F1 [8:16] | F2 [16:24] | F3 [24:32]" in text and "cross.kernels[0] of [L, D, D]" in text


class ShardedEmbeddingBagCollection(nn.Module):
    """Stands for the module TorchRec's DistributedModelParallel puts in place of a collection (recognised by its
    class name, as the real one is): its lookups run in fused kernels, never through the tables' own modules."""

    def __init__(self) -> None:
        super().__init__()
        self.user, self.item = nn.Embedding(30, 4), nn.Embedding(20, 4)


def test_a_torchrec_sharded_collection_is_a_clear_notice_that_the_cross_analysis_is_skipped():
    """A cross layer whose field order would be read from lookups that DistributedModelParallel runs in its own
    kernels: a RuntimeWarning when the finder is set up (fit start) that says what is skipped, why, and how to
    name the order, and no hooks waiting for a batch; with cross_fields the order is taken as given."""
    model = nn.Module()
    model.ebc = ShardedEmbeddingBagCollection()
    model.cross = nn.Linear(8, 8)
    units = analysis_units(discover_tables(model))
    finder = CrossFinder("auto", owner="EmbeddingSpectrumMonitor")
    with pytest.warns(RuntimeWarning, match=r"DistributedModelParallel.*skipped.*cross_fields"):
        finder.setup(model, units)
    assert not finder.waiting and finder.layout is None
    given = CrossFinder("auto", cross_fields=["user", "item"], owner="EmbeddingSpectrumMonitor")
    given.setup(model, units)
    assert [(s.name, s.start, s.stop) for s in given.layout.slots] == [("user", 0, 4), ("item", 4, 8)]
