"""Pure analysis functions on tensors (CPU or CUDA, any float dtype): call them on a checkpoint or a live model.

The callbacks in :mod:`lightning_recanalysis.callbacks` only decide when to call these and where to log.
"""

from .conflict import (
    cosine_from_gram,
    cosine_sums,
    embedding_row_gradients,
    field_gradient_gram,
    gradient_cosine,
    looked_up_row_gradients,
    view_gram,
)
from .conflict_subset import (
    conflict_histograms,
    conflict_rank_correlations,
    conflict_subsets,
    frequent_ids,
    geometry_agreement,
    pair_distances,
    percentile,
    percentiles,
    placement_shares,
)
from .correlation import learned_correlation, mutual_information, rank_correlation, target_relative_positions
from .field_pair import (
    cross_layer_pair_strength,
    field_label_mutual_information,
    field_pair_matrices,
    interaction_information,
    pair_label_mutual_information,
    table_mutual_information,
)
from .interaction import cross_layer_block, interaction_information_abundance
from .ranking import subset_aurocs
from .spectrum import (
    RowNormalizedGram,
    all_reduce_gram,
    effective_rank,
    information_abundance,
    normalized_spectrum,
    row_normalized_gram,
    sharded_singular_values,
    singular_values,
    singular_values_from_gram,
    stable_rank,
)

__all__ = [
    "conflict_histograms",
    "conflict_rank_correlations",
    "conflict_subsets",
    "frequent_ids",
    "geometry_agreement",
    "pair_distances",
    "percentile",
    "percentiles",
    "placement_shares",
    "cosine_from_gram",
    "cosine_sums",
    "looked_up_row_gradients",
    "view_gram",
    "embedding_row_gradients",
    "field_gradient_gram",
    "gradient_cosine",
    "RowNormalizedGram",
    "all_reduce_gram",
    "sharded_singular_values",
    "cross_layer_block",
    "effective_rank",
    "information_abundance",
    "interaction_information_abundance",
    "learned_correlation",
    "mutual_information",
    "normalized_spectrum",
    "rank_correlation",
    "row_normalized_gram",
    "singular_values",
    "singular_values_from_gram",
    "stable_rank",
    "subset_aurocs",
    "cross_layer_pair_strength",
    "field_label_mutual_information",
    "field_pair_matrices",
    "interaction_information",
    "pair_label_mutual_information",
    "table_mutual_information",
    "target_relative_positions",
]
