"""AnalysisWriter's image path: its own PNG summary decodes to the very pixels drawn, as add_image's does."""

import io
from types import SimpleNamespace

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from helpers import read_events
from lightning_recanalysis.raster import heatmap_image
from lightning_recanalysis.writers import AnalysisWriter


def test_images_read_back_pixel_for_pixel_beside_add_image(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])
    drawn = heatmap_image(np.arange(12.0).reshape(3, 4) / 11, title="a map", annotate=True)
    writer = AnalysisWriter("test")
    writer.image(trainer, "ours", drawn, step=3)
    logger.experiment.add_image("theirs", drawn, global_step=3, dataformats="HWC")  # the oracle: tensorboard's own
    # A float image is not ours to encode: it goes through add_image (values in [0, 1]).
    writer.image(trainer, "float", drawn.astype(np.float32) / 255, step=3)
    logger.experiment.flush()
    events = read_events(tmp_path / "run" / "version_0")
    decoded = {}
    for tag in ("ours", "theirs", "float"):
        (event,) = events.Images(tag)
        assert event.step == 3 and (event.height, event.width) == drawn.shape[:2]
        decoded[tag] = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded["ours"], drawn)
    assert np.array_equal(decoded["ours"], decoded["theirs"])
    assert np.abs(decoded["float"].astype(int) - drawn).max() <= 1
