"""The weights of the task losses in a training loss, read from the loss's autograd graph.

When the loss that the training step backpropagates is ``L = sum_t w_t L_t + c`` (constant weights ``w_t``, a
constant ``c``), its gradient at any tensor is ``sum_t w_t g_t``. The gradient probe then needs ``T - 1``
backward passes of its own instead of ``T``: the training's backward gives the sum, and the last task's gradient
is ``g_d = (g_L - sum_{t != d} w_t g_t) / w_d`` (:mod:`.gradient_probe`).

:func:`task_loss_weights` reads ``w_t`` from the graph itself, not from values: it follows the nodes from ``L``
down to the task losses and accepts only nodes that are linear with constant coefficients (sums, differences,
negation, products and quotients by a one-element constant, dtype casts and reshapes of one element, a sum or
mean of stacked losses). Anything else on the way (a regulariser, a loss that is not among ``task_losses``, a
product of two losses, a compiled graph) gives ``None`` and the probe does its ``T`` passes as before.

    >>> import torch
    >>> x = torch.ones(3, requires_grad=True)
    >>> click, buy = x.sum(), (2 * x).pow(2).sum()
    >>> task_loss_weights((click + 0.5 * buy) / 4, {"click": click, "buy": buy})
    {'click': 0.25, 'buy': 0.125}
    >>> task_loss_weights(click + buy + x.pow(2).sum(), {"click": click, "buy": buy}) is None  # a regulariser
    True
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

__all__ = ["task_loss_weights"]

#: Nodes that pass their coefficient on unchanged: dtype casts and reshapes (of one element, see below).
_PASS = {"ToCopyBackward0", "ViewBackward0", "ReshapeAliasBackward0", "UnsqueezeBackward0", "SqueezeBackward0",
         "SqueezeBackward1", "SqueezeBackward2", "CloneBackward0", "AliasBackward0"}
#: Bound on the nodes visited: a training loss is a handful of nodes above its task losses.
_MAX_VISITS = 256


def _constant(node, name: str) -> float | None:
    """The one-element constant saved as ``name`` on ``node`` (None when absent or larger)."""
    value = getattr(node, name, None)
    if not torch.is_tensor(value) or value.numel() != 1 or value.requires_grad:
        return None
    return float(value)


def _children(node, coef: float, numel: int) -> list[tuple[object, float, int]] | None:
    """``node``'s inputs with their coefficients and sizes, or None when ``node`` is not linear with constant
    coefficients. ``numel`` is the size of ``node``'s output; above the stacked losses it is 1."""
    kind = type(node).__name__
    nexts = [n for n, _ in node.next_functions]
    if numel > 1:  # only the stack of the losses themselves, each one element
        if kind in ("StackBackward0", "CatBackward0") and len(nexts) == numel:
            return [(n, coef, 1) for n in nexts]
        return None
    if kind in _PASS:
        return [(n, coef, 1) for n in nexts]
    if kind in ("AddBackward0", "SubBackward0") and len(nexts) == 2:
        alpha = float(getattr(node, "_saved_alpha", 1))
        return [(nexts[0], coef, 1), (nexts[1], coef * alpha * (1 if kind == "AddBackward0" else -1), 1)]
    if kind == "RsubBackward1":
        return [(nexts[0], -coef * float(getattr(node, "_saved_alpha", 1)), 1)]
    if kind == "NegBackward0":
        return [(nexts[0], -coef, 1)]
    if kind in ("MulBackward0", "DivBackward0") and len(nexts) == 2:
        if kind == "MulBackward0" and nexts[0] is None:  # constant * loss
            factor, child = _constant(node, "_saved_self"), nexts[1]
        elif nexts[1] is None:  # loss * constant, loss / constant
            factor, child = _constant(node, "_saved_other"), nexts[0]
            if factor is not None and kind == "DivBackward0":
                factor = 1.0 / factor if factor != 0 else None
        else:  # a product of two things that carry gradients: not linear
            return None
        return None if factor is None else [(child, coef * factor, 1)]
    if kind in ("SumBackward0", "SumBackward1", "MeanBackward0", "MeanBackward1") and len(nexts) == 1:
        sizes = getattr(node, "_saved_self_sym_sizes", None)
        if sizes is None:
            return None
        size = math.prod(int(s) for s in sizes)
        return [(nexts[0], coef / size if kind.startswith("Mean") else coef, size)]
    return None


def task_loss_weights(loss: torch.Tensor, task_losses: Mapping[str, torch.Tensor]) -> dict[str, float] | None:
    """``{task: w_t}`` with ``loss = sum_t w_t task_losses[t] + constant``, read from ``loss``'s graph; None when
    the graph is anything else (see the module's docstring). A task whose loss is not in ``loss`` gets 0."""
    if not torch.is_tensor(loss) or loss.numel() != 1 or loss.grad_fn is None:
        return None
    leaves = {}
    for task, value in task_losses.items():
        if not torch.is_tensor(value) or value.grad_fn is None or value.numel() != 1 or value.grad_fn in leaves:
            return None
        leaves[value.grad_fn] = task
    weights = {task: 0.0 for task in task_losses}
    stack, visits = [(loss.grad_fn, 1.0, 1)], 0
    while stack:
        node, coef, numel = stack.pop()
        visits += 1
        if visits > _MAX_VISITS:
            return None
        if node is None:  # a constant: no gradient
            continue
        if node in leaves:
            if numel != 1:
                return None
            weights[leaves[node]] += coef
            continue
        children = _children(node, coef, numel)
        if children is None:
            return None
        stack.extend(children)
    return weights if all(math.isfinite(w) for w in weights.values()) else None
