"""CTR data for the DCNv2 demo: a synthetic generator with planted low-rank field interactions, and a loader for
the Criteo sample.

Both return ``CTRData``: ``features`` [n, N] per-field value ids (0-based within each field), ``label`` [n] in
{0, 1}, ``field_dims`` (cardinality of each field) and ``field_names``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .paths import dataset_path

#: Cardinalities of the synthetic fields: from a handful of values to ten thousand, as in real CTR data.
SYNTHETIC_FIELD_DIMS = (4, 12, 40, 100, 300, 1000, 3000, 10000)
#: The planted interactions: the label depends on <u_i(x_i), u_j(x_j)> for these field pairs (0-based), each
#: through a rank-``PLANTED_RANK`` latent code. Every other pair carries no signal.
PLANTED_PAIRS = ((2, 6), (3, 5), (4, 7))
PLANTED_RANK = 2


@dataclass
class CTRData:
    features: torch.Tensor
    label: torch.Tensor
    field_dims: list[int]
    field_names: list[str]
    planted_pairs: list[tuple[int, int]] = field(default_factory=list)
    noise_fields: list[int] = field(default_factory=list)


def synthetic_ctr(n_samples: int = 200_000, seed: int = 0, zipf: float = 1.1) -> CTRData:
    """Synthetic CTR data whose label depends on a few low-rank field interactions.

    Each field's values are drawn from a Zipf-like law (a few frequent values, a long tail, as in real logs).
    Every value v of field i has a latent code u_i(v) in R^r (r = ``PLANTED_RANK``, standard normal), and

        logit = bias + sum_{(i, j) in PLANTED_PAIRS} 1.5 * <u_i(x_i), u_j(x_j)> / sqrt(r)
        label ~ Bernoulli(sigmoid(logit))

    so the label carries information only through the planted pairs, and through a rank-r code: a model that
    learns it well needs only r directions per interacting field, which is where collapse shows. Fields 0 and 1
    take part in no pair (pure noise).
    """
    g = torch.Generator().manual_seed(seed)
    dims = list(SYNTHETIC_FIELD_DIMS)
    columns = []
    for d in dims:
        weights = 1.0 / torch.arange(1, d + 1, dtype=torch.float64) ** zipf
        columns.append(torch.multinomial(weights, n_samples, replacement=True, generator=g))
    features = torch.stack(columns, dim=1)
    codes = [torch.randn(d, PLANTED_RANK, generator=g) for d in dims]
    logit = torch.full((n_samples,), -1.0)
    for i, j in PLANTED_PAIRS:
        logit += 1.5 * (codes[i][features[:, i]] * codes[j][features[:, j]]).sum(1) / math.sqrt(PLANTED_RANK)
    label = torch.bernoulli(torch.sigmoid(logit), generator=g)
    in_pairs = {f for pair in PLANTED_PAIRS for f in pair}
    return CTRData(
        features=features,
        label=label,
        field_dims=dims,
        field_names=[f"F{i}" for i in range(len(dims))],
        planted_pairs=list(PLANTED_PAIRS),
        noise_fields=[i for i in range(len(dims)) if i not in in_pairs],
    )


CRITEO_INT_FIELDS = [f"I{i}" for i in range(1, 14)]
CRITEO_CAT_FIELDS = [f"C{i}" for i in range(1, 27)]


def _criteo_int_bucket(text: str) -> str:
    """The Criteo competition winners' discretisation: values > 2 go to floor(log(x)^2), others stay."""
    if text == "":
        return "NA"
    value = int(text)
    return str(int(math.log(value) ** 2)) if value > 2 else str(value)


def criteo_sample(path=None, min_count: int = 1) -> CTRData:
    """The 1,000-row Criteo sample: 13 integer fields (discretised) and 26 hashed categorical fields, 39 fields.

    Rows hold 37 to 40 tab-separated fields (trailing empties are stripped), read as 40 named columns. In each
    field, id 0 is "missing or rarer than ``min_count``" and the other values get ids in order of first
    appearance.
    """
    path = path or dataset_path("criteo-sample", "train.txt")
    names = CRITEO_INT_FIELDS + CRITEO_CAT_FIELDS
    raw: list[list[str]] = []
    labels: list[float] = []
    with open(path) as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (40 - len(parts))
            labels.append(float(parts[0]))
            ints = [_criteo_int_bucket(p) for p in parts[1:14]]
            cats = [p or "NA" for p in parts[14:40]]
            raw.append(ints + cats)
    counts: list[dict[str, int]] = [{} for _ in names]
    for row in raw:
        for i, value in enumerate(row):
            counts[i][value] = counts[i].get(value, 0) + 1
    vocab: list[dict[str, int]] = []
    for i in range(len(names)):
        ids: dict[str, int] = {}
        for row in raw:
            value = row[i]
            if value != "NA" and counts[i][value] >= min_count and value not in ids:
                ids[value] = len(ids) + 1
        vocab.append(ids)
    features = torch.tensor([[vocab[i].get(v, 0) for i, v in enumerate(row)] for row in raw], dtype=torch.long)
    return CTRData(features=features, label=torch.tensor(labels), field_dims=[len(v) + 1 for v in vocab],
                   field_names=names)
