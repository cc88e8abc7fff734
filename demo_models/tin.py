"""TIN (Zhou et al., "Temporal Interest Network for User Response Prediction", WWW 2024).

    e_j = E_cat[c_j] + E_pos[p_j]                   target-aware temporal encoding: p_j = target-relative
    v   = E_cat[c_t] + E_pos[0]                     position (1 = most recent); the target sits at 0
    a_j = softmax_j( <e_j, v> / sqrt(d) )           target-aware attention, over real behaviours
    u   = sum_j a_j (e_j * v)                       target-aware representation (elementwise product)

The position embedding lets the attention logit <e_j, v> and the representation e_j * v both depend on how
recent a behaviour is, which is how TIN learns the temporal decay of the data. (The authors' released code
pools e_j and multiplies by v after pooling; since v does not depend on j it is the same u.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_recanalysis.functional import target_relative_positions

from .sequence import SequenceCTR


class TIN(SequenceCTR):
    def __init__(self, num_categories: int, max_length: int, embed_dim: int = 16, **kwargs) -> None:
        super().__init__(num_categories, max_length, embed_dim=embed_dim, **kwargs)
        # Row 0: the target; row p: a behaviour at target-relative position p (1..max_length).
        self.position_embedding = nn.Embedding(max_length + 1, embed_dim)
        nn.init.normal_(self.position_embedding.weight, std=0.1)

    def interest(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        mask = batch["mask"]
        positions = target_relative_positions(mask)  # [B, L], 0 on padding
        e = self.category_embedding(batch["behavior_category"]) + self.position_embedding(positions)
        v = self.category_embedding(batch["target_category"]) + self.position_embedding.weight[0]
        logits = (e * v[:, None, :]).sum(-1) / math.sqrt(e.shape[-1])
        # A large finite negative (not -inf) keeps a row without any real behaviour finite: its weights are
        # then uniform, and the mask below zeroes them.
        a = torch.softmax(logits.masked_fill(~mask, -1e4), dim=1) * mask
        return (a[..., None] * (e * v[:, None, :])).sum(1), v
