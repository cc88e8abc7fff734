"""encode_png against Pillow's decoder (an independent PNG reader): the same pixels back, for images with
every byte value, wrap-around differences between rows, one row, one column, and a real figure."""

import io

import numpy as np
import pytest
from PIL import Image

from lightning_recanalysis.figures import conflict_subset_image, encode_png


def decoded(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.mode == "RGB" and image.format == "PNG"
    return np.asarray(image)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (37, 53)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_random_pixels_decode_to_the_same_pixels(shape, level):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)  # rows differ by every amount, wrapping
    np.testing.assert_array_equal(decoded(encode_png(image, level=level)), image)


def test_a_figure_decodes_to_its_pixels_and_is_no_larger_than_stored_deflate():
    shares = {"top": 0.5, "middle": 0.25, "bottom": 0.25}
    view = {"edges": list(np.linspace(0, 2, 40)), "low": 0.8, "high": 1.2,
            "modes": {"a_far_b_near": {"conflict": [3] * 39, "rest": [10] * 39, "shares": shares}}}
    image = conflict_subset_image("embedding", view)
    data = encode_png(image)
    np.testing.assert_array_equal(decoded(data), image)
    assert len(data) < image.nbytes / 10  # flat colours: the Up filter and deflate shrink it by far


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        encode_png(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        encode_png(np.zeros((2, 2, 3), np.uint8), level=10)
