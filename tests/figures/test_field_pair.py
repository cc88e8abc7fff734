"""Figures of the field-pair analysis: the top-pairs tables rank as derived by hand, and the interaction map's
diverging scale is symmetric about zero."""

import numpy as np
from matplotlib import colormaps

from lightning_recanalysis.figures import field_pair_image, top_pairs_markdown


def _record(learned=None):
    mi = [[0.0, 0.2, 0.5, 0.1], [0.2, 0.0, 0.2, 0.0], [0.5, 0.2, 0.0, 0.3], [0.1, 0.0, 0.3, 0.0]]
    return {"fields": ["a", "b", "c", "d"], "samples": 1000, "epoch": 2, "mutual_information": mi,
            "interaction_information": [[0.0, 0.1, -0.2, 0.0], [0.1, 0.0, 0.0, 0.0], [-0.2, 0.0, 0.0, 0.05],
                                        [0.0, 0.0, 0.05, 0.0]],
            "learned": learned, "learned_source": "cross layer", "agreement": 0.5, "agreement_interaction": None}


def _pairs(table_lines):
    return [line.split(" | ")[1] for line in table_lines if line.startswith("| ") and " x " in line]


def test_top_pairs_rank_by_mi_ties_by_position():
    lines = top_pairs_markdown(_record(), top_k=4).splitlines()
    # MI: a-c 0.5, c-d 0.3, then the tie a-b = b-c = 0.2 broken by position (a-b first).
    assert _pairs(lines) == ["a x c", "c x d", "a x b", "b x c"]
    assert "Top pairs in the model" not in "\n".join(lines)


def test_top_pairs_of_the_model_with_mi_ranks():
    learned = np.zeros((4, 4))
    learned[1, 3] = learned[3, 1] = 2.0  # b-d: strongest in the model, last (MI 0, after a-d's 0.1) in the data
    # Learned ranks: b-d, then the zeros by position: a-b, a-c (3rd), a-d, b-c, c-d.
    text = top_pairs_markdown(_record(learned.tolist()), top_k=1)
    data, model = text.split("**Top pairs in the model**")
    assert _pairs(data.splitlines()) == ["a x c"] and "| 1 | a x c | 0.5 | -0.2 | 0 | 3 |" in data
    assert "| 1 | b x d | 2 | 6 |" in model and "agreement with MI: 0.500, with interaction information: n/a" in model


def test_interaction_map_scale_is_symmetric_about_zero():
    image = field_pair_image(_record(), "interaction_information")
    rdbu = colormaps["RdBu_r"]
    low, high = ((np.asarray(rdbu(v)[:3]) * 255).round() for v in (0.0, 1.0))
    # The largest |value| is 0.2: -0.2 (a-c, twice) takes the bottom colour; +0.1 is not the top one.
    assert (image == low.astype(np.uint8)).all(axis=2).sum() >= 2 * 22 * 22
    assert (image == high.astype(np.uint8)).all(axis=2).sum() < 22 * 22
