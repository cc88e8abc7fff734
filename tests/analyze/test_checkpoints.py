"""``python -m lightning_recanalysis analyze``: a Lightning checkpoint through its class, the same file read as a
plain state dict, a directory of state dicts, ``--field-dims`` and ``--tables``, and the errors that say what to
change."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_recanalysis import EmbeddingSpectrumMonitor, analyze
from lightning_recanalysis.cli import main
from lightning_recanalysis.offline import module_from_state_dict
from lightning_recanalysis.report import read_run
from lightning_recanalysis.toy import ToyDCN, toy_loader, toy_trainer

FIELDS = {"user": 4, "item": 6, "category": 8}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    callback = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}-{step}")
    model = ToyDCN()
    toy_trainer([callback], max_epochs=2, enable_checkpointing=True).fit(model, toy_loader())
    return tmp_path / "ckpt" / "epoch=1-step=4.ckpt", model


def _ia(record):
    return {f: s.information_abundance for f, s in record.views["embedding"].fields.items()}


def test_a_lightning_checkpoint_with_its_class_and_as_a_state_dict(tmp_path, checkpoint, capsys, one_thread):
    path, model = checkpoint
    expected = analyze(model, monitors=[EmbeddingSpectrumMonitor(field_dims=FIELDS)], out=tmp_path / "expected")
    expected = expected.records["collapse"][-1]
    for name, options in (("class", ["--model", "lightning_recanalysis.toy.ToyDCN"]), ("state", [])):
        out = tmp_path / name
        assert main(["analyze", str(path), *options, "--field-dims", "user=4,item=6,category=8",
                     "--out", str(out), "--quiet"]) == 0
        assert f"wrote {out} (event files), {out / 'report.html'}" in capsys.readouterr().out
        record = [r for r in read_run(out).records["collapse"] if r.stage == "epoch"][-1]
        assert (record.epoch, record.step) == (1, 4)  # the checkpoint's own
        assert _ia(record) == _ia(expected) and sorted(_ia(record)) == ["category", "item", "user"]
        assert record.interaction.matrix == expected.interaction.matrix  # the cross layer, in table order
    assert "collapse" in json.loads((tmp_path / "state" / "summary.json").read_text())["analyses"]


def test_a_directory_of_state_dicts_is_a_trajectory(tmp_path, one_thread):
    torch.manual_seed(0)
    folder = tmp_path / "dicts"
    folder.mkdir()
    models = [ToyDCN() for _ in range(3)]
    for number, model in enumerate(models):
        torch.save(model.state_dict(), folder / f"weights_{number}.pt")
    assert main(["analyze", str(folder), "--field-dims", "4,6,8", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    records = [r for r in read_run(tmp_path / "out").records["collapse"] if r.stage == "epoch"]
    assert [(r.epoch, r.step) for r in records] == [(0, 0), (1, 1), (2, 2)]  # no saved epoch: the file's place
    for record, model in zip(records, models):
        alone = analyze(model, monitors=[EmbeddingSpectrumMonitor(field_dims=[4, 6, 8])], out=tmp_path / "x",
                        overwrite=True).records["collapse"][-1]
        assert _ia(record) == _ia(alone)


def test_tables_by_name_and_shape(one_thread):
    state = {"embedding.weight": torch.randn(18, 4), "item_tower.weight": torch.randn(6, 4),
             "cross.weight": torch.randn(12, 12), "cross.bias": torch.zeros(12), "head.weight": torch.randn(1, 12)}
    module = module_from_state_dict(state)
    kinds = {name: type(m).__name__ for name, m in module.named_modules() if name}
    assert kinds == {"embedding": "Embedding", "item_tower": "Module", "cross": "Linear", "head": "Module"}
    assert module.embedding.weight.data_ptr() == state["embedding.weight"].data_ptr()  # not copied
    chosen = module_from_state_dict(state, tables=["item_*"])
    assert type(chosen.item_tower).__name__ == "Embedding" and type(chosen.embedding).__name__ == "Module"


def test_errors_say_what_to_change(tmp_path, checkpoint, one_thread):
    path, _ = checkpoint
    with pytest.raises(SystemExit, match=r"field dims add up to 7 rows, and no table has that many: embedding \[18 x 4\]"):
        main(["analyze", str(path), "--field-dims", "3,4", "--out", str(tmp_path / "a"), "--quiet"])
    main(["analyze", str(path), "--out", str(tmp_path / "b"), "--quiet"])
    with pytest.raises(SystemExit, match="already holds event files"):
        main(["analyze", str(path), "--out", str(tmp_path / "b"), "--quiet"])
    assert main(["analyze", str(path), "--out", str(tmp_path / "b"), "--overwrite", "--quiet"]) == 0
    assert len(list((tmp_path / "b").glob("events.out.tfevents.*"))) == 1
    with pytest.raises(SystemExit, match="cannot import 'no_such_package'"):
        main(["analyze", str(path), "--model", "no_such_package.Model", "--quiet"])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["analyze", str(tmp_path / "missing.ckpt"), "--quiet"])
