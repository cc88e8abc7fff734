"""TorchRec's unsharded ``EmbeddingBagCollection`` / ``EmbeddingCollection``: tables named by their features.

A collection holds its tables as ``nn.EmbeddingBag`` / ``nn.Embedding`` modules in ``embedding_bags`` /
``embeddings`` (keyed by table name), which :func:`~lightning_recanalysis.model.tables.discover_tables` finds like any
other; what it adds is the feature names of each table (``EmbeddingBagConfig.feature_names``), which become the
field's name (joined with ``+`` for a table shared by several features), and, for the cross-input discovery, the
collection's own lookups: a ``KeyedJaggedTensor`` in, a ``KeyedTensor`` of one ``[B, K]`` pooled embedding per
feature out, matched by feature name. Nothing here imports torchrec: collections are recognised by their
``embedding_bag_configs()`` / ``embedding_configs()`` methods, so models without torchrec never load it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["collection_feature_names", "collection_lookups", "sharded_collections"]


def _collections(model: nn.Module):
    for name, module in model.named_modules():
        if callable(getattr(module, "embedding_bag_configs", None)) and hasattr(module, "embedding_bags"):
            yield name, module, "embedding_bags", module.embedding_bag_configs()
        elif callable(getattr(module, "embedding_configs", None)) and hasattr(module, "embeddings"):
            yield name, module, "embeddings", module.embedding_configs()


def _join(prefix: str, *parts: str) -> str:
    return ".".join(p for p in (prefix, *parts) if p)


def collection_feature_names(model: nn.Module) -> dict[str, list[str]]:
    """``{table module name: [feature names]}`` for every table of every TorchRec collection in ``model``.

    Example:
        >>> from torch import nn
        >>> collection_feature_names(nn.Sequential(nn.Embedding(4, 2)))  # no TorchRec collection in it
        {}
    """
    return {_join(name, attr, config.name): list(config.feature_names)
            for name, _, attr, configs in _collections(model) for config in configs}


def collection_lookups(model: nn.Module) -> tuple[dict[str, nn.Module], set[str], Callable]:
    """``(collections to hook, table modules not to hook, slots_of)`` for the cross-input discovery.

    ``slots_of(module name, args, kwargs, output)`` gives, for a pooled collection's call, one
    ``(table module name, feature name, ids, [B, K] values)`` per feature; ``None`` for any other module.
    Sequence (unpooled) ``EmbeddingCollection`` outputs are jagged, never a column block of a cross input: none.

    Example:
        >>> from torch import nn
        >>> hooked, inner, slots_of = collection_lookups(nn.Sequential(nn.Embedding(4, 2)))
        >>> hooked, inner, slots_of("0", (torch.tensor([1]),), {}, torch.zeros(1, 2))  # no collection to read
        ({}, set(), None)
    """
    hooked, inner, table_of = {}, set(), {}
    for name, module, attr, configs in _collections(model):
        hooked[name] = module
        for config in configs:
            inner.add(_join(name, attr, config.name))
            for feature in config.feature_names:
                table_of[(name, feature)] = _join(name, attr, config.name)

    def slots_of(name, args, kwargs, output):
        if name not in hooked:
            return None
        if not hasattr(output, "keys") or not hasattr(output, "values") or isinstance(output, dict):
            return []
        features = args[0] if args else kwargs.get("features")
        out = []
        for key in output.keys():
            values = output[key]
            if isinstance(values, torch.Tensor) and values.dim() == 2 and (name, key) in table_of:
                out.append((table_of[(name, key)], key, features[key].values(), values))
        return out

    return hooked, inner, slots_of


def sharded_collections(model: nn.Module) -> list[str]:
    """The names of the collections that TorchRec's ``DistributedModelParallel`` has sharded in ``model``
    (``ShardedEmbeddingBagCollection``, ``ShardedEmbeddingCollection``): their lookups run in fused kernels that
    return per-rank pieces, not the ``[B, K]`` embedding of each feature that a cross input is matched against.

    Example:
        >>> from torch import nn
        >>> sharded_collections(nn.Sequential(nn.Embedding(4, 2)))  # nothing sharded by DistributedModelParallel
        []
    """
    return [name for name, module in model.named_modules()
            if type(module).__name__ in ("ShardedEmbeddingBagCollection", "ShardedEmbeddingCollection")]
