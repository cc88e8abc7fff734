"""PNG encoding: :func:`~lightning_recanalysis.figures.encode_png` against Pillow, side by side on figures the
monitors draw, at two settings: the live images (zlib level 1 for both, ``writers.image_summary``) and the
report's files (``figures.png_bytes``: ``encode_png`` at level 6 against Pillow at its default, level 6 with
adaptive row filters).

    python -m benchmarks.bench_png [--repeats 7]

For each figure: the median milliseconds of each encoder over ``repeats`` rounds (the two interleaved within every
round, so load on the machine hits both alike), their ratio with its min-median-max over the rounds, the bytes of
each file, and a check that both decode to the same pixels.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from lightning_recanalysis.figures import conflict_subset_image, cosine_heatmap, encode_png

from ._common import median, table

SUPPORTS_QUICK = True


def _pillow(image: np.ndarray, level: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _figures() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 400, size=(2, 39))
    shares = {"top": 0.5, "middle": 0.2, "bottom": 0.3}
    view = {"edges": list(np.linspace(0.0, 3.0, 40)), "low": 1.2, "high": 1.8,
            "modes": {m: {"conflict": list(counts[0] // 5), "rest": list(counts[1]), "shares": shares}
                      for m in ("click_far_purchase_near", "purchase_far_click_near")}}
    cosines = np.array([[1.0, -0.3], [-0.3, 1.0]])
    return {"conflict subsets (2 modes)": conflict_subset_image("embedding", view),
            "cosine heatmap (2 tasks)": cosine_heatmap(cosines, ["click", "purchase"], "embedding, epoch 3")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    rows = []
    for setting, level in (("live", 1), ("report", 6)):
        pillow = lambda image, _level=level: _pillow(image, _level)
        ours = lambda image, _level=level: encode_png(image, _level)
        for name, image in _figures().items():
            times = {"pillow": [], "encode_png": []}
            for _ in range(repeats):
                for encoder, fn in (("pillow", pillow), ("encode_png", ours)):
                    start = time.thread_time()
                    for _ in range(10):
                        data = fn(image)
                    times[encoder].append((time.thread_time() - start) / 10)
            ratios = sorted(p / e for p, e in zip(times["pillow"], times["encode_png"]))
            same = np.array_equal(np.asarray(Image.open(io.BytesIO(ours(image))).convert("RGB")), image)
            rows.append([f"{setting}, level {level}", name, f"{image.shape[0]}x{image.shape[1]}",
                         f"{median(times['pillow']) * 1e3:.2f}", f"{median(times['encode_png']) * 1e3:.2f}",
                         f"{ratios[0]:.2f}-{median(ratios):.2f}-{ratios[-1]:.2f}",
                         f"{len(pillow(image))}", f"{len(data)}", "yes" if same else "NO"])
    print(f"PNG encoding, thread CPU time, {repeats} interleaved rounds of 10 encodings each")
    print(table(["setting", "figure", "pixels", "Pillow ms", "encode_png ms", "Pillow / encode_png (min-med-max)",
                 "Pillow bytes", "encode_png bytes", "same pixels"], rows))

if __name__ == "__main__":
    main()
