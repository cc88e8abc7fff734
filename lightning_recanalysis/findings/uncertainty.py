"""The small statistics behind the findings' uncertainty: intervals and tests, in closed form (no SciPy).

- :func:`t_quantile`: Student's t quantile, for the interval of a mean over few probes;
- :func:`mean_interval`: mean +- t_{1-a/2, n-1} s / sqrt(n) from a count, a sum and a sum of squares;
- :func:`sign_test`: the one-sided binomial p-value of k or more negative signs out of n under p = 1/2;
- :func:`g_test_p`: the p-value of a 2 x 2 table's mutual information, G = 2 N ln(2) MI_bits ~ chi^2(1);
- :func:`spearman_interval`: a rank correlation's interval by Fisher's z with Fieller's standard error
  sqrt(1.06 / (n - 3)).
"""

from __future__ import annotations

import math

__all__ = ["g_test_p", "mean_interval", "normal_quantile", "sign_test", "spearman_interval", "t_quantile"]


def normal_quantile(p: float) -> float:
    """The standard normal quantile (Acklam's rational approximation, relative error below 1.2e-9).

    Example:
        >>> round(normal_quantile(0.975), 6), normal_quantile(0.5)
        (1.959964, 0.0)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -normal_quantile(1 - p)
    if p == 0.5:
        return 0.0
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile with ``df`` degrees of freedom (exact for df 1 and 2, Hill's 1970 expansion beyond,
    within 1e-4 of the exact value for p in [0.9, 0.9999] and df >= 3).

    Example:
        >>> round(t_quantile(0.975, 1), 3), round(t_quantile(0.975, 3), 3), round(t_quantile(0.975, 30), 3)
        (12.706, 3.182, 2.042)
    """
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
    # Hill (1970), Algorithm 396: from the two-sided tail probability.
    two_sided = 2 * (1 - p)
    n = float(df)
    a = 1 / (n - 0.5)
    b = 48 / (a * a)
    c = ((20700 * a / b - 98) * a - 16) * a + 96.36
    d = ((94.5 / (b + c) - 3) / b + 1) * math.sqrt(a * math.pi / 2) * n
    x = d * two_sided
    y = x ** (2 / n)
    if y > 0.05 + a:
        x = normal_quantile(two_sided * 0.5)
        y = x * x
        if n < 5:
            c += 0.3 * (n - 4.5) * (x + 0.6)
        c = (((0.05 * d * x - 5) * x - 7) * x - 2) * x + b + c
        y = (((((0.4 * y + 6.3) * y + 36) * y + 94.5) / c - y - 3) / b + 1) * x
        y = a * y * y
        y = math.expm1(y)
    else:
        y = ((1 / (((n + 6) / (n * y) - 0.089 * d - 0.822) * (n + 2) * 3) + 0.5 / (n + 4)) * y - 1) * \
            (n + 1) / (n + 2) + 1 / y
    return math.sqrt(n * y)


def mean_interval(n: int, total: float, total_sq: float, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of n values from their sum and sum of squares, with its t interval
    (infinite for fewer than two values).

    Example:
        >>> [round(v, 3) for v in mean_interval(4, -2.0, 1.5)]  # s = sqrt(1/6), t(0.975, 3) = 3.182
        [-0.5, -1.15, 0.15]
    """
    if n < 1:
        return float("nan"), -math.inf, math.inf
    mean = total / n
    if n < 2:
        return mean, -math.inf, math.inf
    variance = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(variance / n)
    return mean, mean - half, mean + half


def sign_test(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the one-sided p-value of k or more signs of one kind out of n.

    Example:
        >>> sign_test(4, 4), sign_test(7, 8), sign_test(0, 5)
        (0.0625, 0.03515625, 1.0)
    """
    if n <= 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(max(0, k), n + 1)) / 2.0 ** n


def g_test_p(mutual_information_bits: float, samples: int) -> float:
    """The p-value of a 2 x 2 table's plug-in mutual information under independence: G = 2 N ln(2) MI is
    chi-squared with one degree of freedom, so p = erfc(sqrt(G / 2)).

    Example:
        >>> round(g_test_p(0.0, 1000), 3), g_test_p(0.01, 10000) < 1e-10
        (1.0, True)
    """
    g = 2.0 * samples * math.log(2.0) * max(0.0, mutual_information_bits)
    return math.erfc(math.sqrt(g / 2.0))


def spearman_interval(rho: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The interval of a Spearman rank correlation over n pairs: tanh(atanh(rho) +- z sqrt(1.06 / (n - 3)))
    (Fieller, Hartley and Pearson 1957); (-1, 1) for n <= 3.

    Example:
        >>> [round(v, 2) for v in spearman_interval(0.5, 40)]
        [0.21, 0.71]
    """
    if n <= 3 or not math.isfinite(rho):
        return -1.0, 1.0
    z = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = normal_quantile(0.5 + confidence / 2) * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)
