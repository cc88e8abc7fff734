"""DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018).

    e_j = E_cat[c_j]                                behaviour j's embedding (no position term)
    v   = E_cat[c_t]                                the target's
    a_j = MLP_att([e_j, v, e_j - v, e_j * v])       local activation unit: a scalar weight, not normalised
    u   = sum_j a_j e_j                             over real behaviours (weighted sum pooling)

DIN's interest depends on *which* behaviours occur, not on when: permuting the sequence leaves u unchanged, so
its learned correlation cannot decay with position (Zhou et al., WWW 2024).
"""

from __future__ import annotations

import torch

from .sequence import SequenceCTR, mlp


class DIN(SequenceCTR):
    def __init__(self, num_categories: int, max_length: int, embed_dim: int = 16, attention_dims=(36,),
                 **kwargs) -> None:
        super().__init__(num_categories, max_length, embed_dim=embed_dim, **kwargs)
        self.activation_unit = mlp([4 * embed_dim, *attention_dims, 1])

    def interest(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch["mask"]
        e = self.category_embedding(batch["behavior_category"])  # [B, L, d]
        v = self.category_embedding(batch["target_category"])  # [B, d]
        q = v[:, None, :].expand_as(e)
        a = self.activation_unit(torch.cat([e, q, e - q, e * q], dim=-1)).squeeze(-1)  # [B, L]
        a = a * mask  # padding contributes nothing
        return (a[..., None] * e).sum(1), v
