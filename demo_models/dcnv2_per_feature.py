"""DCNv2 laid out as public CTR libraries lay it out: one table per feature, the cross kernels as one raw tensor.

The same model as :mod:`demo_models.dcnv2` (same cross network, tower and head, same synthetic data), held the way
DeepCTR-Torch, FuxiCTR and TorchRec hold it:

    embedding_dict = nn.ModuleDict({feature: nn.Embedding(cardinality, K)})     one table per feature
    x_0 = [e_f for f in features]                                                concatenated in feature order
    cross.kernels: [L, N K, N K],  cross.bias: [L, N K]                          DeepCTR's CrossNet('matrix')
    x_{l+1} = x_0 * (kernels[l] x_l + bias[l]) + x_l

The monitors are attached with no layout option at all: the tables are found as one field set of N fields
(``embedding_dict``), and the cross kernel and the fields' order in its input are found by themselves, the order
on the first training batch. :meth:`DCNv2PerFeature.from_concatenated` builds one from a concatenated DCNv2
holding the same weights (the tests check that both give the same analyses).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Experiment
from .data.batches import batch_loader
from .dcnv2 import DCNv2, ctr_split


class CrossNetKernels(nn.Module):
    """DeepCTR-Torch's ``CrossNet(parameterization='matrix')``: ``kernels`` ``[L, D, D]``, ``bias`` ``[L, D]``."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.kernels = nn.Parameter(torch.empty(num_layers, input_dim, input_dim))
        self.bias = nn.Parameter(torch.zeros(num_layers, input_dim))
        for kernel in self.kernels.data:  # nn.Linear's default initialisation, layer by layer
            nn.init.kaiming_uniform_(kernel, a=5 ** 0.5)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for kernel, bias in zip(self.kernels, self.bias):
            x = x0 * (x @ kernel.T + bias) + x
        return x


class DCNv2PerFeature(DCNv2):
    def __init__(self, field_names: list[str], field_dims: list[int], embed_dim: int = 16, cross_layers: int = 3,
                 mlp_dims: tuple[int, ...] = (256, 128), dropout: float = 0.1, lr: float = 1e-3) -> None:
        super().__init__(field_dims, embed_dim, cross_layers, mlp_dims, dropout, lr)
        del self.embedding, self.cross  # the concatenated layout's modules, replaced by the per-feature ones
        self.field_names = list(field_names)
        self.embedding_dict = nn.ModuleDict({n: nn.Embedding(d, embed_dim) for n, d in zip(field_names, field_dims)})
        # The concatenated demo's initialisation (xavier_uniform over the whole sum(field_dims) x K table), so both
        # demos start from the same distribution; xavier per table would start small fields 20 to 60 times larger.
        bound = (6.0 / (sum(field_dims) + embed_dim)) ** 0.5
        for table in self.embedding_dict.values():
            nn.init.uniform_(table.weight, -bound, bound)
        self.cross = CrossNetKernels(len(field_dims) * embed_dim, cross_layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([self.embedding_dict[n](features[:, i]) for i, n in enumerate(self.field_names)], dim=1)
        return self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(1)

    @classmethod
    def from_concatenated(cls, model: DCNv2, field_names: list[str]) -> "DCNv2PerFeature":
        """The same network with ``model``'s weights: table rows split per field, cross layers stacked."""
        h = model.hparams
        out = cls(field_names, list(h.field_dims), h.embed_dim, h.cross_layers, tuple(h.mlp_dims), h.dropout, h.lr)
        out.mlp.load_state_dict(model.mlp.state_dict())
        out.head.load_state_dict(model.head.state_dict())
        weight, start = model.embedding.embedding.weight.detach(), 0
        with torch.no_grad():
            for name, dim in zip(field_names, h.field_dims):
                out.embedding_dict[name].weight.copy_(weight[start : start + dim])
                start += dim
            out.cross.kernels.copy_(torch.stack([layer.weight for layer in model.cross.layers]))
            out.cross.bias.copy_(torch.stack([layer.bias for layer in model.cross.layers]))
        return out.to(weight.dtype)


def build(model: str, data: str, seed: int, monitors: bool, n_samples: int | None = None) -> Experiment:
    from lightning_recanalysis import EmbeddingSpectrumMonitor, FieldPairCorrelationMonitor

    ctr, train, val, batch_size, epochs = ctr_split(data, seed, n_samples)
    module = DCNv2PerFeature(ctr.field_names, ctr.field_dims)
    callbacks = []
    if monitors:
        # No layout options: the N tables form one field set, the cross kernel and its input order are found.
        callbacks.append(EmbeddingSpectrumMonitor())
        callbacks.append(FieldPairCorrelationMonitor(ctr.field_names, field_dims=ctr.field_dims))
    return Experiment(
        module=module,
        train_loader=batch_loader(train, batch_size, shuffle=True, seed=seed),
        val_loader=batch_loader(val, 4096, shuffle=False),
        callbacks=callbacks,
        max_epochs=epochs,
        description=f"DCNv2, one table per feature, {len(ctr.field_dims)} fields, {len(train['label'])} training rows",
        extra={"planted_pairs": ctr.planted_pairs, "field_names": ctr.field_names},
    )
