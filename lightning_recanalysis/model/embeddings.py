"""The category and position embeddings a behaviour-target monitor reads, located by name and looked up exactly.

Used by :class:`~lightning_recanalysis.FeatureCorrelationMonitor` for its learned map: at ``setup`` to check the
names and shapes, at each analysis to read the rows of the categories and positions shown (through
:func:`~lightning_recanalysis.parallel.sharding.lookup_rows`, exact for a sharded table too).
"""

from __future__ import annotations

import torch
from torch import nn

from ..parallel import sharding

__all__ = ["behavior_and_target_embeddings", "check_behavior_embeddings", "embedding_table"]


def embedding_table(module: nn.Module, name: str, option: str) -> torch.Tensor:
    """The 2-D weight that ``name`` points to: an ``nn.Embedding``'s weight or a 2-D parameter of the module.

    ``option`` is the constructor argument that gave the name, for the error message.

    Example:
        >>> model = nn.Module()
        >>> model.category = nn.Embedding(5, 3)
        >>> embedding_table(model, "category", "category_embedding").shape
        torch.Size([5, 3])
        >>> embedding_table(model, "nope", "category_embedding")
        Traceback (most recent call last):
        ...
        ValueError: category_embedding='nope' must name an nn.Embedding or a 2-D parameter of Module; found nothing. Embeddings of the module: ['category']
    """
    try:
        found = module.get_submodule(name)
    except AttributeError:
        found = None
    if isinstance(found, nn.Embedding):
        return found.weight
    if found is None:
        try:
            found = module.get_parameter(name)
        except AttributeError:
            found = None
    if isinstance(found, torch.Tensor) and found.dim() == 2:
        return found
    raise ValueError(
        f"{option}='{name}' must name an nn.Embedding or a 2-D parameter of {type(module).__name__}; found "
        f"{type(found).__name__ if found is not None else 'nothing'}. Embeddings of the module: "
        f"{[n for n, m in module.named_modules() if isinstance(m, nn.Embedding)]}"
    )


def behavior_and_target_embeddings(
    module: nn.Module, category_embedding: str, position_embedding: str | None, target_position: int,
    target: int, rows: torch.Tensor, positions: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e [C, P, d], v [d])``: e_cp = E_cat[c] + E_pos[p] for the categories ``rows`` and ``positions``, and
    v = E_cat[target] + E_pos[target_position] (no position terms without ``position_embedding``).

    Only the rows shown are looked up (every rank takes part in the lookups of a sharded table).

    Example:
        >>> model = nn.Module()
        >>> model.cat = nn.Embedding(4, 2)
        >>> e, v = behavior_and_target_embeddings(model, "cat", None, 0, 3, torch.tensor([0, 1]), torch.arange(1, 4))
        >>> tuple(e.shape), tuple(v.shape), bool(torch.equal(v, model.cat.weight[3]))
        ((2, 3, 2), (2,), True)
    """
    category = embedding_table(module, category_embedding, "category_embedding")
    looked_up = sharding.lookup_rows(category, torch.cat([rows.cpu(), torch.tensor([target])]))
    behavior = looked_up[:-1][:, None, :].expand(-1, len(positions), -1)
    target_vec = looked_up[-1]
    if position_embedding is not None:
        position = embedding_table(module, position_embedding, "position_embedding")
        at = sharding.lookup_rows(position, torch.cat([positions, torch.tensor([target_position])]))
        behavior = behavior + at[:-1][None, :, :]
        target_vec = target_vec + at[-1]
    return behavior, target_vec


def check_behavior_embeddings(module: nn.Module, category_embedding: str, position_embedding: str | None,
                              num_positions: int, target_position: int) -> int:
    """Check at setup that the named tables exist and fit together; returns the number of categories.

    The position table must have the category table's width (e = category + position) and a row for each of
    positions 1..``num_positions`` and for ``target_position``.

    Example:
        >>> model = nn.Module()
        >>> model.cat, model.pos = nn.Embedding(7, 4), nn.Embedding(3, 4)
        >>> check_behavior_embeddings(model, "cat", None, 10, 0)
        7
        >>> check_behavior_embeddings(model, "cat", "pos", 10, 0)
        Traceback (most recent call last):
        ...
        ValueError: position_embedding 'pos' has 3 rows; positions 1..10 and the target's row 0 need 11. Lower num_positions or pass learned_embeddings for another layout.
    """
    category = embedding_table(module, category_embedding, "category_embedding")
    if position_embedding is not None:
        position = embedding_table(module, position_embedding, "position_embedding")
        if position.shape[1] != category.shape[1]:
            raise ValueError(
                f"position_embedding '{position_embedding}' has width {position.shape[1]} but category_embedding "
                f"'{category_embedding}' has {category.shape[1]}: e = category + position needs one width"
            )
        needed = max(num_positions, target_position) + 1
        if position.shape[0] < needed:
            raise ValueError(
                f"position_embedding '{position_embedding}' has {position.shape[0]} rows; positions "
                f"1..{num_positions} and the target's row {target_position} need {needed}. "
                "Lower num_positions or pass learned_embeddings for another layout."
            )
    return int(category.shape[0])
