"""Every figure, image and markdown table the package draws, one module per analysis, importing neither the
callbacks nor the report (both import this layer):

- renderers: :mod:`.heatmap` and :mod:`.line` and :mod:`.histogram` (Pillow, milliseconds a figure, for the
  images monitors log live and the report alike), :mod:`.bars` (matplotlib, the report's grouped bar charts);
  :mod:`.pillow` holds their shared drawing primitives (text, colours, ticks; public, for figures of one's own), :mod:`.png` a fast lossless PNG encoder
  for the live images;
- per analysis: :mod:`.collapse`, :mod:`.correlation`, :mod:`.field_pair`, :mod:`.conflict`,
  :mod:`.entanglement`, :mod:`.conflict_subset`.

Pillow is kept for everything drawn while training: ``python -m benchmarks.bench_figures`` draws the same
heatmaps with both renderers side by side and prints the ratio.
"""

from .._lazy import lazy_exports

# Each submodule is imported when one of its names is first read (see _lazy).
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".bars": ("grouped_bar_figure",),
    ".collapse": (
        "ia_bar_figure", "ia_over_time_image", "ia_vs_init_image", "interaction_image", "spectrum_heatmap_image"
    ),
    ".conflict": ("cosine_heatmap", "cosine_trend_image", "field_pair_cosine_image"),
    ".entanglement": ("distance_histogram_image",),
    ".conflict_subset": ("LIVE_PANEL_SIZE", "conflict_subset_image", "conflict_subset_panel"),
    ".correlation": ("correlation_map_image", "correlation_maps_image", "same_category_image"),
    ".field_pair": ("field_pair_image", "top_pairs_markdown"),
    ".heatmap": ("heatmap_image",),
    ".histogram": ("FAR", "MIDDLE", "NEAR", "bin_colors", "stacked_histogram_image"),
    ".line": ("agreement_image", "line_image"),
    # The drawing primitives every renderer shares, for a figure of one's own in the same style.
    ".pillow": (
        "ABSENT_LINE", "BLANK", "FRAME", "GRID", "INK", "SUPERSAMPLE", "cell_text", "colormap_colors", "hatch",
        "legend_size", "nice_ticks", "png_bytes", "side_by_side", "text_size", "tick_texts", "vertical_glyphs",
        "vertical_text", "wrap_text", "write_text"
    ),
    ".png": ("encode_png",),
})
