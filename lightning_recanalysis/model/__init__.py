"""Reading a recommendation model: its embedding tables and fields, its cross layer, its lookups and its tasks.

What the monitors analyse is found here, once, at ``setup`` (or on the first batch), and read at each analysis:

- :mod:`.tables`, :mod:`.torchrec_tables`: the embedding tables (``nn.Embedding``, ``nn.EmbeddingBag``, TorchRec
  collections, raw parameters) and the fields in them (:func:`discover_tables`);
- :mod:`.field_sets`: the units an analysis runs on (a table's view, or the one-table-per-feature field set);
- :mod:`.cross`: cross kernels of any form, their input layout, and finding it on the first batch;
- :mod:`.spectrum_layout`, :mod:`.spectrum_analysis`: what the spectrum monitor reads and computes;
- :mod:`.embeddings`, :mod:`.pair_strength`: the embeddings and the learned pair strength of the correlation
  monitors; :mod:`.batch`: a monitor's fields out of a training batch;
- :mod:`.multitask`: the task protocol; :mod:`.gradient_probe`, :mod:`.conflict_statistics`: per-task gradients
  on the looked-up rows; :mod:`.validation_pairs`, :mod:`.reference`, :mod:`.conflict_subset`: the (user, item)
  pairs of the entanglement analysis and its single-task references.

Above :mod:`lightning_recanalysis.parallel` (a sharded table is read through it) and below the metrics, figures
and callbacks.
"""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".tables": (
        "ColumnGroup", "EmbeddingTable", "Field", "TableView", "describe_tables", "discover_tables",
        "refresh_parameters"
    ),
    ".field_sets": ("FieldSet", "SetField", "analysis_units", "field_gram", "field_key"),
    ".cross": (
        "CrossInputDiscovery", "CrossKernel", "CrossLayout", "CrossSlot", "block_pair_strength",
        "cross_kernel_candidates", "explicit_layout", "match_cross_input", "resolve_cross_kernel"
    ),
    ".batch": ("BatchFieldReader", "select_fields"),
    ".multitask": ("check_lookups_still_called", "resolve_tasks"),
})
