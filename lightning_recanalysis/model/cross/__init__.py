"""The cross layer of a model, in one place: its kernel, the layout of its input, and how that layout is found.

- :mod:`.kernels`: the kernel W of a DCN-style cross layer ``x_{l+1} = x0 * (W x_l + b) + x_l`` in any form (an
  ``nn.Linear``, a ``[D, D]`` or ``[L, D, D]`` tensor, DCNv2's mixture of low-rank experts), and the layout of
  its input: which columns hold which field (:class:`CrossLayout`);
- :mod:`.discovery`: the layout read on the first batch, by matching the cross input's columns against each
  embedding lookup;
- :mod:`.finder`: the monitors' one entry point (given, in table order, or found on the first batch);
- :mod:`.hooks`: the Lightning hooks that read the layout on the first training step.
"""

from ..._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".kernels": (
        "CrossKernel", "CrossLayout", "CrossSlot", "block_pair_strength", "cross_kernel_candidates",
        "explicit_layout", "is_square_linear", "named_cross_layer", "resolve_cross_kernel"
    ),
    ".discovery": ("CrossInputDiscovery", "match_cross_input"),
    ".finder": ("CrossFinder",),
    ".hooks": ("CrossLayoutHooks",),
})
