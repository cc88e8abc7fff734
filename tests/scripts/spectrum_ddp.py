"""Train TinyCTR with EmbeddingSpectrumMonitor on N CPU processes (Lightning "ddp", gloo) and dump what each rank
holds: ``python spectrum_ddp.py OUT_DIR DEVICES``. Run by tests/callbacks/test_spectrum_ddp.py, through the scenario
groups of tests/scripts/scenario_groups.py (:func:`scenario`, beside the other scenarios of its engine)."""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import TinyCTR, tiny_ctr_loader  # noqa: E402

from lightning_recanalysis import EmbeddingSpectrumMonitor  # noqa: E402


def scenario(out: Path, devices: int) -> pl.Trainer:
    pl.seed_everything(0)
    model = TinyCTR()
    initial = model.embedding.weight.detach().clone()
    monitor = EmbeddingSpectrumMonitor(field_dims={"color": 7, "item": 50}, strict=True)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
        logger=TensorBoardLogger(str(out), name="tb", version=0), callbacks=[monitor],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, tiny_ctr_loader(n=512, batch_size=32))
    rank = trainer.global_rank
    (out / f"history_rank{rank}.json").write_text(json.dumps(monitor.history))
    if rank == 0:
        torch.save({"initial": initial, "final": model.embedding.weight.detach().clone()}, out / "weights.pt")
    return trainer


if __name__ == "__main__":
    scenario(Path(sys.argv[1]), int(sys.argv[2]))
