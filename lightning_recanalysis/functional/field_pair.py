"""Field-pair correlation for CTR models: what every pair of fields tells about the label, and what the model coupled.

Pan et al., "Ad Recommendation in a Collapsed and Entangled World" (KDD 2024), measure the correlation between a
feature and the label as a mutual information counted from the data, and note that the tool generalises from
(target, behaviour) to any pair of features ("general feature correlation"). The field-weighted factorization
machine line of work (Juan et al., "Field-aware Factorization Machines", RecSys 2016; Pan et al., "Field-weighted
Factorization Machines for Click-Through Rate Prediction in Display Advertising", WWW 2018) showed the field x field
heatmap of the same question: how much does the pair of fields (F_i, F_j), taken together, tell about the click.

**Ground truth.** From a table of joint counts n(a, b, y) of (value of F_i, value of F_j, label):

    pair MI                  MI((F_i, F_j); Y)
    single-field MI          MI(F_i; Y)
    interaction information  II(F_i, F_j; Y) = MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y)

all plug-in estimates from the counts (:func:`table_mutual_information`). II isolates what the pair says beyond
what each field says alone: it is positive for a synergistic pair (the XOR of two fair coins: 0 + 0 -> 1 bit),
negative for redundant fields (a field and its copy), about 0 for fields that act on the label independently.
(It equals I(F_i; F_j | Y) - I(F_i; F_j), McGill's interaction information, 1954.)

**Learned.** DCNv2's first cross layer (Wang et al., WWW 2021) computes x_1 = x_0 * (W x_0 + b) + x_0 on the
concatenated field embeddings; the K x K block W[j, i] = W[jK:(j+1)K, iK:(i+1)K] maps field i's embedding into
field j's slot, so e_j * (W[j, i] e_i) is the pair's explicit interaction term. Its size

    S_ij = (||W[j, i]||_F + ||W[i, j]||_F) / 2        (:func:`cross_layer_pair_strength`)

is the learned strength of the pair (the mean makes it symmetric, as MI is). For FM-family models the pair's
own weight plays this role (r_ij of FwFM, ||<v_i, v_j>|| of FM).

Logarithms are base 2 by default (bits, as Pan et al. report them); pass ``base=math.e`` for nats.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "table_mutual_information",
    "pair_label_mutual_information",
    "field_label_mutual_information",
    "interaction_information",
    "field_pair_matrices",
    "cross_layer_pair_strength",
]


def table_mutual_information(counts: torch.Tensor, *, base: float = 2.0, bias_correction: str = "none") -> torch.Tensor:
    """Plug-in mutual information MI(X; Y) of a joint count table with X on axis -2 and Y on axis -1.

        MI = sum_{x, y} (n_xy / N) log_b( n_xy N / (n_x. n_.y) ),   n_x. = sum_y n_xy,  n_.y = sum_x n_xy

    Args:
        counts: ``[..., A, B]`` non-negative counts (or probabilities), any A, B >= 1; leading axes are a batch
            of independent tables.
        base: logarithm base; 2 (default) gives bits, ``math.e`` nats (torchmetrics' ``mutual_info_score``).
        bias_correction: ``"none"`` (default): the plug-in estimate, as Pan et al. and torchmetrics compute it.
            ``"miller_madow"``: subtract Miller's (1955) first-order bias, (m_xy - m_x - m_y + 1) / (2 N ln b)
            with m_xy, m_x, m_y the numbers of non-empty cells, rows and columns. The plug-in MI of independent
            variables is about that much above 0, so tables of different sizes (a 2-value field against a
            32-value one) are only comparable after it. The corrected value can be slightly negative.

    Returns:
        ``[...]`` float64. An empty cell contributes 0 (the limit of p log p, no pseudo-count); an all-empty
        table gives 0; a table with a single non-empty row or column (a field that takes one value, a label that
        never varies) gives exactly 0, never NaN, with or without the correction.

    Example:
        >>> table_mutual_information(torch.tensor([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0]])).round(decimals=4)
        tensor(0.6667, dtype=torch.float64)
    """
    if bias_correction not in ("none", "miller_madow"):
        raise ValueError(f"bias_correction must be 'none' or 'miller_madow', got {bias_correction!r}")
    if counts.dim() < 2:
        raise ValueError(f"counts must have shape [..., A, B], got {tuple(counts.shape)}")
    n_xy = counts.detach().to(torch.float64)
    if n_xy.numel() and bool((n_xy < 0).any()):
        raise ValueError("counts must be non-negative")
    total = n_xy.sum(dim=(-2, -1), keepdim=True)
    n_x = n_xy.sum(dim=-1, keepdim=True)
    n_y = n_xy.sum(dim=-2, keepdim=True)
    # 0 * log(0) has the limit 0: mask empty cells before the log. Where n_xy > 0 both margins are > 0.
    present = n_xy > 0
    ratio = torch.where(present, n_xy * total / (n_x * n_y).clamp_min(1e-300), torch.ones_like(n_xy))
    terms = torch.where(present, n_xy * torch.log(ratio), torch.zeros_like(n_xy))
    mi = terms.sum(dim=(-2, -1)) / total.squeeze(-1).squeeze(-1).clamp_min(1e-300) / math.log(base)
    # Rounding leaves about -1e-17 for independent tables; MI is non-negative by definition.
    mi = mi.clamp_min(0.0)
    if bias_correction == "miller_madow":
        m_xy = present.sum(dim=(-2, -1))
        m_x = (n_x.squeeze(-1) > 0).sum(-1)
        m_y = (n_y.squeeze(-2) > 0).sum(-1)
        total = total.squeeze(-1).squeeze(-1)
        # m_xy - m_x - m_y + 1 is 0 for a table with one non-empty row or column, so those stay exactly 0.
        excess = (m_xy - m_x - m_y + 1).to(torch.float64)
        mi = mi - torch.where(total > 0, excess / (2 * total.clamp_min(1e-300) * math.log(base)), 0.0)
    return mi


def _check_label_axis(counts: torch.Tensor, dims: int, what: str) -> None:
    if counts.dim() < dims:
        raise ValueError(f"{what} counts must have at least {dims} axes, got shape {tuple(counts.shape)}")


def pair_label_mutual_information(
    counts: torch.Tensor, *, base: float = 2.0, bias_correction: str = "none"
) -> torch.Tensor:
    """MI((F_i, F_j); Y) from ``[..., A, B, C]`` counts of (value of F_i, value of F_j, label): the pair as one
    variable of A x B values. Returns ``[...]`` float64 (see :func:`table_mutual_information`).

    Example:
        >>> xor = torch.zeros(2, 2, 2)
        >>> for a in (0, 1):
        ...     for b in (0, 1):
        ...         xor[a, b, a ^ b] = 25
        >>> pair_label_mutual_information(xor)  # the pair determines Y: one bit
        tensor(1., dtype=torch.float64)
    """
    _check_label_axis(counts, 3, "pair")
    *lead, a, b, c = counts.shape
    return table_mutual_information(counts.reshape(*lead, a * b, c), base=base, bias_correction=bias_correction)


def field_label_mutual_information(
    counts: torch.Tensor, *, base: float = 2.0, bias_correction: str = "none"
) -> torch.Tensor:
    """MI(F; Y) from ``[..., A, C]`` counts of (value of F, label). Returns ``[...]`` float64.

    Example:
        >>> field_label_mutual_information(torch.tensor([[30.0, 10.0], [10.0, 30.0]])).round(decimals=4)
        tensor(0.1887, dtype=torch.float64)
    """
    _check_label_axis(counts, 2, "field")
    return table_mutual_information(counts, base=base, bias_correction=bias_correction)


def interaction_information(counts: torch.Tensor, *, base: float = 2.0, bias_correction: str = "none") -> torch.Tensor:
    """II = MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y) from ``[..., A, B, C]`` counts of (F_i, F_j, label).

    The single-field terms are read from the margins of the same table, so all three share one set of samples
    and one bucketing (the difference of estimates over different samples would not be an interaction).
    Returns ``[...]`` float64; positive = synergy (the pair says more than its fields), negative = redundancy.

    Example:
        >>> xor = torch.zeros(2, 2, 2)
        >>> for a in (0, 1):
        ...     for b in (0, 1):
        ...         xor[a, b, a ^ b] = 25
        >>> interaction_information(xor)  # neither field alone says anything: pure synergy
        tensor(1., dtype=torch.float64)
    """
    _check_label_axis(counts, 3, "pair")
    kw = {"base": base, "bias_correction": bias_correction}
    joint = pair_label_mutual_information(counts, **kw)
    first = table_mutual_information(counts.sum(dim=-2), **kw)
    second = table_mutual_information(counts.sum(dim=-3), **kw)
    return joint - first - second


def cross_layer_pair_strength(
    cross_weight: torch.Tensor,
    num_fields: int,
    width: int,
    *,
    offset: int = 0,
    symmetric: bool = True,
) -> torch.Tensor:
    """``[N, N]`` float64 learned pair strength from a DCNv2 cross weight.

    Entry (i, j) is ``||W[j, i]||_F``, the Frobenius norm of the block that maps field i's embedding into field
    j's slot (:func:`~lightning_recanalysis.functional.cross_layer_block`), and with ``symmetric`` (default) the
    mean of the two directions, ``(||W[j, i]||_F + ||W[i, j]||_F) / 2``. The diagonal is the field's block with
    itself.

    Args:
        cross_weight: the cross layer's square weight (``nn.Linear.weight``); field f's embedding occupies columns
            (and rows) ``offset + f K .. offset + (f + 1) K``.
        num_fields: N, the fields laid out from ``offset``.
        width: K, the embedding width of each field.
        offset: where the first field starts (inputs placed before the fields, e.g. dense features).
        symmetric: average W[j, i] and W[i, j]; ``False`` keeps rows = source i, columns = partner j.

    Example:
        >>> weight = torch.zeros(4, 4)  # 2 fields of width 2
        >>> weight[2:, :2] = torch.eye(2)  # field 0 feeds field 1's slot
        >>> cross_layer_pair_strength(weight, num_fields=2, width=2).round(decimals=4)
        tensor([[0.0000, 0.7071],
                [0.7071, 0.0000]], dtype=torch.float64)
    """
    if cross_weight.dim() != 2 or cross_weight.shape[0] != cross_weight.shape[1]:
        raise ValueError(f"cross_weight must be square, got shape {tuple(cross_weight.shape)}")
    if num_fields < 1 or width < 1 or offset < 0:
        raise ValueError(f"need num_fields >= 1, width >= 1, offset >= 0; got {num_fields}, {width}, {offset}")
    end = offset + num_fields * width
    if end > cross_weight.shape[0]:
        raise ValueError(
            f"cross weight of side {cross_weight.shape[0]} cannot hold {num_fields} fields of width {width} from "
            f"offset {offset} (needs side >= {end})"
        )
    w = cross_weight.detach()[offset:end, offset:end].to(torch.float64)
    # blocks[j, :, i, :] is W[j, i] (cross_layer_block(w, source=i, partner=j, width)); norm over each block.
    blocks = w.reshape(num_fields, width, num_fields, width)
    partner_by_source = torch.linalg.vector_norm(blocks, dim=(1, 3))  # [j, i]
    strength = partner_by_source.T.contiguous()  # [i, j] = ||W[j, i]||
    if symmetric:
        strength = (strength + strength.T) / 2
    return strength.cpu()


def field_pair_matrices(
    pair_counts: torch.Tensor,
    field_counts: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    *,
    base: float = 2.0,
    bias_correction: str = "none",
) -> dict[str, torch.Tensor]:
    """Symmetric ``[N, N]`` float64 matrices of every field pair from their count tables.

    Args:
        pair_counts: ``[P, A, A, C]`` counts of (value of F_i, value of F_j, label) for the P pairs
            ``(first[p], second[p])``.
        field_counts: ``[N, A, C]`` counts of (value, label) per field.
        first / second: ``[P]`` the two field indices of each pair.
        base / bias_correction: see :func:`table_mutual_information`.

    Returns:
        ``mutual_information``: (i, j) = MI((F_i, F_j); Y), diagonal MI(F_i; Y);
        ``interaction_information``: (i, j) = MI((F_i, F_j); Y) - MI(F_i; Y) - MI(F_j; Y), the single-field terms
        from each pair table's own margins; diagonal 0 (a field has no interaction with itself);
        ``field_mutual_information``: ``[N]`` MI(F_i; Y). All on the CPU.

    Example:
        >>> xor = torch.zeros(1, 2, 2, 2)
        >>> for a in (0, 1):
        ...     for b in (0, 1):
        ...         xor[0, a, b, a ^ b] = 25
        >>> fields = torch.stack([xor[0].sum(1), xor[0].sum(0)])  # [N=2, A=2, C=2] margins
        >>> out = field_pair_matrices(xor, fields, torch.tensor([0]), torch.tensor([1]))
        >>> out['mutual_information'], out['interaction_information']
        (tensor([[0., 1.],
                [1., 0.]], dtype=torch.float64), tensor([[0., 1.],
                [1., 0.]], dtype=torch.float64))
    """
    n = field_counts.shape[0]
    kw = {"base": base, "bias_correction": bias_correction}
    pair_counts, field_counts = pair_counts.detach().cpu(), field_counts.detach().cpu()
    single = table_mutual_information(field_counts, **kw)
    mi = torch.diag(single).clone()
    ii = torch.zeros(n, n, dtype=torch.float64)
    if pair_counts.shape[0]:
        i, j = first.cpu().long(), second.cpu().long()
        joint = pair_label_mutual_information(pair_counts, **kw)
        mi[i, j] = joint
        mi[j, i] = joint
        # interaction_information(pair_counts), without computing the joint MI a second time.
        inter = joint - table_mutual_information(pair_counts.sum(-2), **kw) - table_mutual_information(
            pair_counts.sum(-3), **kw)
        ii[i, j] = inter
        ii[j, i] = inter
    return {"mutual_information": mi, "interaction_information": ii, "field_mutual_information": single}
