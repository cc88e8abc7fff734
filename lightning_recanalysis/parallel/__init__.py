"""Reading and summing across processes: the one rank-summing path, agreement between ranks, sharded weights.

Everything an analysis needs when a model is spread over processes, exact and with the same collectives in the
same order on every rank:

- :mod:`.distributed`: whether a process group is up, summing a tensor over ranks (:func:`sum_over_ranks`, the
  package's one all-reduce), the data-parallel group of a trainer;
- :mod:`.agreement`: every rank reaching the same decision (a flag, the first found value or error);
- :mod:`.shard_layout` and :mod:`.mesh_groups`: which block of a sharded weight each rank holds, and over which
  process group it is read;
- :mod:`.sharding`: exact reads of a sharded weight (the Gram of a row and column range, some rows, a small
  tensor whole) and the spectrum of a row-sharded table;
- :mod:`.sharded_interaction`: the interaction matrix's partner Grams from a sharded table.

Below :mod:`lightning_recanalysis.model` and above :mod:`lightning_recanalysis.functional`: it reads tensors, not
models.
"""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".distributed": ("data_parallel_group", "has_other_ranks", "is_distributed", "sum_over_ranks"),
    ".agreement": ("all_true", "first_found"),
    ".mesh_groups": ("local_value", "mesh_problem", "reading_group"),
    ".sharding": (
        "Block", "ShardLayout", "ShardedReadError", "all_reduce_gram", "check_readable", "full_tensor",
        "is_sharded", "layout_of", "lookup_rows", "row_sum", "sharded_gram", "sharded_singular_values"
    ),
    ".sharded_interaction": ("interaction_from_partner_grams", "sharded_partner_grams"),
})
