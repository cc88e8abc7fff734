"""Every figure, image and markdown table the package draws, one module per analysis, importing neither the
callbacks nor the report (both import this layer):

- renderers: :mod:`.heatmap` and :mod:`.line` and :mod:`.histogram` (Pillow, milliseconds a figure, for the
  images monitors log live and the report alike), :mod:`.bars` (matplotlib, the report's grouped bar charts);
  :mod:`.pillow` holds their shared text, colour and tick helpers, :mod:`.png` a fast lossless PNG encoder
  for the live images;
- per analysis: :mod:`.collapse`, :mod:`.correlation`, :mod:`.field_pair`, :mod:`.conflict`,
  :mod:`.entanglement`, :mod:`.conflict_subset`.

Pillow is kept for everything drawn while training: ``python -m benchmarks.bench_figures`` draws the same
heatmaps with both renderers side by side and prints the ratio.
"""

from .bars import grouped_bar_figure
from .collapse import ia_bar_figure, ia_over_time_image, ia_vs_init_image, interaction_image, spectrum_heatmap_image
from .conflict import cosine_heatmap, cosine_trend_image, field_pair_cosine_image
from .entanglement import distance_histogram_image
from .conflict_subset import conflict_subset_image
from .correlation import correlation_map_image, correlation_maps_image, same_category_image
from .field_pair import field_pair_image, top_pairs_markdown
from .heatmap import heatmap_image
from .histogram import FAR, MIDDLE, NEAR, bin_colors, stacked_histogram_image
from .line import agreement_image, line_image
from .pillow import png_bytes, side_by_side
from .png import encode_png

__all__ = [
    "heatmap_image", "line_image", "agreement_image", "stacked_histogram_image", "bin_colors", "NEAR", "MIDDLE", "FAR",
    "side_by_side", "png_bytes", "encode_png", "grouped_bar_figure",
    "spectrum_heatmap_image", "ia_vs_init_image", "interaction_image", "ia_bar_figure", "ia_over_time_image",
    "correlation_map_image", "correlation_maps_image", "same_category_image",
    "field_pair_image", "top_pairs_markdown", "cosine_heatmap", "field_pair_cosine_image",
    "cosine_trend_image", "distance_histogram_image", "conflict_subset_image",
]
