"""Pure analysis functions on tensors (CPU or CUDA, any float dtype): call them on a checkpoint or a live model.

The callbacks in :mod:`lightning_recanalysis.callbacks` only decide when to call these and where to log.
"""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".conflict": (
        "cosine_from_gram", "cosine_sums", "embedding_row_gradients", "field_gradient_gram", "gradient_cosine",
        "looked_up_row_gradients", "view_gram", "view_grams"
    ),
    ".conflict_subset": (
        "conflict_histograms", "conflict_rank_correlations", "conflict_subsets", "frequent_ids",
        "geometry_agreement", "pair_distances", "percentile", "percentiles", "placement_shares"
    ),
    ".correlation": ("learned_correlation", "mutual_information", "rank_correlation", "target_relative_positions"),
    ".field_pair": (
        "cross_layer_pair_strength", "field_label_mutual_information", "field_pair_matrices",
        "interaction_information", "pair_label_mutual_information", "table_mutual_information"
    ),
    ".interaction": ("cross_layer_block", "interaction_information_abundance"),
    ".label_subsets": ("auroc_subsets", "binned_by_subset", "label_pattern_masks", "label_pattern_name",
                       "pair_statistics"),
    ".ranking": ("subset_aurocs",),
    ".spectrum": (
        "RowNormalizedGram", "effective_rank", "information_abundance", "normalized_spectrum",
        "row_normalized_gram", "singular_values", "singular_values_from_gram",
        "stable_rank"
    ),
})
