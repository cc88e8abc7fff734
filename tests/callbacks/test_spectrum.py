"""EmbeddingSpectrumMonitor in a real Trainer.fit: tags read back from the event files, values against the
functional oracle on the model's own weights, resume, faults and loggers other than TensorBoard."""

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from helpers import TinyCTR, numpy_information_abundance, numpy_row_normalized_singular_values, read_events, tiny_ctr_loader
from lightning_recanalysis import EmbeddingSpectrumMonitor
from lightning_recanalysis.functional import interaction_information_abundance

FIELDS = {"color": 7, "item": 50}


def _trainer(tmp_path, callbacks, max_epochs=2, logger=True, **kwargs):
    if logger is True:
        logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    return pl.Trainer(
        max_epochs=max_epochs, logger=logger, callbacks=callbacks, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, **kwargs,
    )


def _oracle_ia(weight) -> float:
    return numpy_information_abundance(numpy_row_normalized_singular_values(weight))


def test_fit_logs_every_tag_with_values_from_the_weights(tmp_path):
    pl.seed_everything(0)
    model = TinyCTR()
    initial = model.embedding.weight.detach().clone()
    monitor = EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)
    _trainer(tmp_path, [monitor]).fit(model, tiny_ctr_loader())
    events = read_events(tmp_path / "run" / "version_0")
    tags = events.Tags()
    ia_tag = "collapse/embedding/item/information_abundance"
    for suffix in ("information_abundance", "effective_rank", "stable_rank", "information_abundance_vs_init"):
        assert f"collapse/embedding/item/{suffix}" in tags["scalars"]
    assert "collapse/embedding/mean_information_abundance" in tags["scalars"]
    assert "collapse/embedding/excluded_rows" in tags["scalars"]
    assert "collapse/embedding/color/normalized_spectrum" in tags["histograms"]
    assert {"collapse/embedding/spectrum_heatmap", "collapse/embedding/information_abundance_vs_init"} <= set(tags["images"])
    assert any(t.startswith("collapse/inventory") for t in tags["tensors"])
    # One baseline at step 0, then one analysis per epoch at that epoch's global step (8 batches per epoch).
    ia = events.Scalars(ia_tag)
    assert [e.step for e in ia] == [0, 8, 16]
    assert ia[0].value == pytest.approx(_oracle_ia(initial[7:]), rel=1e-5)
    assert ia[-1].value == pytest.approx(_oracle_ia(model.embedding.weight[7:]), rel=1e-5)
    # Images and histograms share the scalars' steps.
    assert [e.step for e in events.Images("collapse/embedding/spectrum_heatmap")] == [0, 8, 16]
    assert [e.step for e in events.Histograms("collapse/embedding/color/normalized_spectrum")] == [0, 8, 16]
    ratio = events.Scalars("collapse/embedding/item/information_abundance_vs_init")[-1].value
    assert ratio == pytest.approx(ia[-1].value / ia[0].value, rel=1e-5)
    # The history holds the same numbers as plain values.
    assert [r["stage"] for r in monitor.history] == ["init", "epoch", "epoch"]
    spectrum = monitor.history[-1]["views"]["embedding"]["fields"]["color"]["normalized_spectrum"]
    oracle = numpy_row_normalized_singular_values(model.embedding.weight[:7])
    assert np.allclose(spectrum[:7], oracle / oracle[0], atol=3e-5) and spectrum[7] == 0.0


def test_monitor_does_not_change_training(tmp_path):
    def train(callbacks):
        pl.seed_everything(1)
        model = TinyCTR()
        _trainer(tmp_path, callbacks, logger=False, deterministic=True).fit(model, tiny_ctr_loader())
        return model.state_dict()

    plain = train([])
    monitored = train([EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)])
    assert all(torch.equal(plain[k], monitored[k]) for k in plain)


def test_fast_dev_run_logs_nothing(tmp_path):
    monitor = EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)
    _trainer(tmp_path, [monitor], fast_dev_run=True).fit(TinyCTR(), tiny_ctr_loader())
    assert monitor.history == []


def test_non_tensorboard_logger_gets_scalars_and_one_warning(tmp_path):
    monitor = EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)
    logger = CSVLogger(str(tmp_path), name="csv", version=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [monitor], logger=logger).fit(TinyCTR(), tiny_ctr_loader())
    ours = [w for w in caught if "no TensorBoardLogger" in str(w.message)]
    assert len(ours) == 1
    header = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "collapse/embedding/item/information_abundance" in header


def test_non_finite_rows_are_excluded_counted_and_training_goes_on(tmp_path):
    model = TinyCTR()
    with torch.no_grad():
        model.embedding.weight[7 + 49] = float("nan")  # a value the data never looks up
    monitor = EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)
    x = torch.stack([torch.randint(0, 7, (256,)), torch.randint(0, 49, (256,))], 1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] % 2).float()), batch_size=64)
    with pytest.warns(RuntimeWarning, match="non-finite or all zero"):
        _trainer(tmp_path, [monitor]).fit(model, data)
    assert monitor.history[-1]["views"]["embedding"]["excluded_rows"] == 1
    assert monitor.history[-1]["views"]["embedding"]["fields"]["item"]["excluded_rows"] == 1
    events = read_events(tmp_path / "run" / "version_0")
    assert events.Scalars("collapse/embedding/excluded_rows")[-1].value == 1.0


def test_setup_errors_before_training(tmp_path):
    class NoTables(TinyCTR):
        def __init__(self):
            super().__init__()
            del self.embedding

    with pytest.raises(ValueError, match="no embedding table found"):
        _trainer(tmp_path, [EmbeddingSpectrumMonitor()]).fit(NoTables(), tiny_ctr_loader())
    with pytest.raises(ValueError, match="add up to 56 rows but the table has 57 rows"):
        _trainer(tmp_path, [EmbeddingSpectrumMonitor(field_dims=[7, 49])]).fit(TinyCTR(), tiny_ctr_loader())
    with pytest.raises(ValueError, match="cross_layer='head'"):
        _trainer(tmp_path, [EmbeddingSpectrumMonitor(field_dims=FIELDS, cross_layer="head")]).fit(TinyCTR(), tiny_ctr_loader())


def test_analysis_failure_warns_and_training_goes_on(tmp_path, monkeypatch):
    monitor = EmbeddingSpectrumMonitor(field_dims=FIELDS)
    calls = {"n": 0}
    original = monitor.analyse

    def flaky(*args):  # the monitor passes the Grams of row-sharded tables (none here)
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("simulated out of memory")
        return original(*args)

    monkeypatch.setattr(monitor, "analyse", flaky)
    with pytest.warns(RuntimeWarning, match="epoch 0 failed and is skipped"):
        trainer = _trainer(tmp_path, [monitor], max_epochs=3)
        trainer.fit(TinyCTR(), tiny_ctr_loader())
    assert trainer.current_epoch == 3
    assert [(r["stage"], r["epoch"]) for r in monitor.history] == [("init", 0), ("epoch", 1), ("epoch", 2)]
    strict = EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)
    monkeypatch.setattr(strict, "analyse", lambda *args: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, [strict]).fit(TinyCTR(), tiny_ctr_loader())


def test_resume_continues_the_history(tmp_path):
    pl.seed_everything(2)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)
    trainer = pl.Trainer(max_epochs=2, logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
                         callbacks=[first, ckpt], accelerator="cpu", devices=1, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(TinyCTR(), tiny_ctr_loader())
    init_value = first.history[0]["views"]["embedding"]["fields"]["item"]["information_abundance"]
    second = EmbeddingSpectrumMonitor(field_dims=FIELDS, strict=True)
    resumed = pl.Trainer(max_epochs=4, logger=TensorBoardLogger(str(tmp_path), name="run", version=0),
                         callbacks=[second, ModelCheckpoint(dirpath=tmp_path / "ckpt2")], accelerator="cpu",
                         devices=1, enable_progress_bar=False, enable_model_summary=False)
    resumed.fit(TinyCTR(), tiny_ctr_loader(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [(r["stage"], r["epoch"]) for r in second.history] == [("init", 0), ("epoch", 0), ("epoch", 1), ("epoch", 2), ("epoch", 3)]
    assert second.history[0]["views"]["embedding"]["fields"]["item"]["information_abundance"] == init_value
    # The checkpoint holds only plain values, so it loads with weights_only=True.
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert any("EmbeddingSpectrumMonitor" in k for k in state["callbacks"])


def test_dcnv2_interaction_matrix_logged_and_equal_to_the_oracle(tmp_path):
    from demo_models.dcnv2 import DCNv2

    pl.seed_everything(3)
    dims = [3, 6, 30]
    model = DCNv2(dims, embed_dim=4, cross_layers=2, mlp_dims=(8,))
    x = torch.stack([torch.randint(0, d, (256,)) for d in dims], 1)
    loader = torch.utils.data.DataLoader(
        [{"features": x[i], "label": float(x[i, 0] == x[i, 1] % 3)} for i in range(256)], batch_size=64)
    monitor = EmbeddingSpectrumMonitor(field_dims={"a": 3, "b": 6, "c": 30}, strict=True)  # cross layer: auto
    _trainer(tmp_path, [monitor], max_epochs=1).fit(model, loader)
    interaction = monitor.history[-1]["interaction"]
    assert interaction["layer"] == "cross.layers.0" and interaction["fields"] == ["a", "b", "c"]
    w = model.embedding.embedding.weight.detach()
    tables = [w[0:3], w[3:9], w[9:39]]
    oracle = interaction_information_abundance(tables, model.cross.layers[0].weight.detach())
    assert np.allclose(interaction["matrix"], oracle.numpy(), rtol=1e-9)
    tags = read_events(tmp_path / "run" / "version_0").Tags()
    assert "collapse/embedding.embedding/interaction_information_abundance" in tags["images"]
    assert "collapse/embedding.embedding/interaction/a/mean_information_abundance" in tags["scalars"]
