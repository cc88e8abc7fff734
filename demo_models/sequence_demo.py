"""The DIN and TIN demos: planted (or real) behaviour sequences, the model, and the feature-correlation monitor.

Apart from :mod:`demo_models.sequence` so that the models import their shared base and this builder imports the
models, never the other way round.
"""

from __future__ import annotations

from lightning_recanalysis import FeatureCorrelationMonitor

from .common import Experiment, synthetic_size
from .data.batches import batch_loader, split
from .data.sequences import load, planted_sequences
from .din import DIN
from .tin import TIN


#: Per data set: batch size and epochs of the demo.
SETTINGS = {"synthetic": (512, 3), "alimama-sample": (32, 10), "movielens": (256, 3)}


def build(model: str, data: str, seed: int, monitors: bool, n_samples: int | None = None) -> Experiment:
    size = synthetic_size(data, n_samples)
    sequences = planted_sequences(seed=seed, **size) if size else load(data, seed=seed)
    batch_size, epochs = SETTINGS[data]
    train, val = split(sequences.tensors, 0.1, seed)
    cls = {"din": DIN, "tin": TIN}[model]
    module = cls(sequences.num_categories, sequences.max_length)
    callbacks = []
    if monitors:
        callbacks.append(FeatureCorrelationMonitor(
            category_embedding="category_embedding",
            # TIN's behaviour embedding is category + target-relative position, its target's category + p_0;
            # DIN has no position term, and its attention pools e itself, not e * v.
            position_embedding="position_embedding" if model == "tin" else None,
            representation="product" if model == "tin" else "behavior",
            category_names=sequences.category_names,
        ))
    return Experiment(
        module=module,
        train_loader=batch_loader(train, batch_size, shuffle=True, seed=seed),
        val_loader=batch_loader(val, 4096, shuffle=False),
        callbacks=callbacks,
        max_epochs=epochs,
        description=f"{model.upper()}, {sequences.description}, {len(train['label'])} training rows",
        extra={"planted": sequences.planted, "num_categories": sequences.num_categories},
    )
