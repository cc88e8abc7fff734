"""The shared argument checks: the accepted values and the message for the rest."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_recanalysis.checks import check_non_negative_int, check_positive_int, short_list


@pytest.mark.parametrize("bad", [0, -3, 2.0, "2", True, None, np.float64(1)])
def test_positive_int_rejects_what_is_not_an_integer_of_at_least_one(bad):
    with pytest.raises(ValueError, match=rf"^top_k must be a positive integer, got {bad!r}$".replace("(", r"\(")
                       .replace(")", r"\)")):
        check_positive_int("top_k", bad)


def test_positive_int_accepts_integers_from_one_and_none_where_allowed():
    assert check_positive_int("n", 1) == 1 and check_positive_int("n", 10**9) == 10**9
    assert check_positive_int("count_epochs", None, allow_none=True) is None
    with pytest.raises(ValueError, match="count_epochs must be a positive integer or None, got 0"):
        check_positive_int("count_epochs", 0, allow_none=True)


def test_non_negative_int_and_short_list():
    assert check_non_negative_int("cross_offset", 0) == 0
    with pytest.raises(ValueError, match="cross_offset must be a non-negative integer, got -1"):
        check_non_negative_int("cross_offset", -1)
    assert short_list(list("abcdef")) == "a, b, c, d, e, f"
    assert short_list(list("abcdefg")) == "a, b, c, d, e, ..., g"
