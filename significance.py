"""How sure a difference of means over a few seeds is: Welch's t interval, with the Student t
quantile computed here (no SciPy: the project's dependencies are torch, numpy, tqdm, matplotlib).

With n seeds per cell, Welch's interval for mean(a) - mean(b) is

    d +- t(0.975, v) * s,   s = sqrt(var(a) / n_a + var(b) / n_b),
    v = s^4 / ((var(a) / n_a)^2 / (n_a - 1) + (var(b) / n_b)^2 / (n_b - 1))     (Welch-Satterthwaite)

with sample variances. With 2 or 3 seeds v is small and t(0.975, v) large (12.7 at v = 1, 4.30 at
v = 2): the interval says how little a few seeds pin down, not how likely a difference is.
"""

import math
import statistics

__all__ = ["student_t_quantile", "welch_interval"]


def regularized_incomplete_beta(x, a, b):
    """I_x(a, b), by its continued fraction (modified Lentz), on the side where it converges fast."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_incomplete_beta(1.0 - x, b, a)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0  # K = 1 + d_1 / (1 + d_2 / (1 + ...)), and I = front / (a K)
    for j in range(1, 400):
        m = j // 2
        if j % 2:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + term * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + term / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) / (a * f)


def student_t_cdf(t, df):
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p, df):
    """The t with P(T <= t) = p, by bisection on the CDF (to 1e-10)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"student_t_quantile: p must be in (0, 1) and df > 0, got {p!r}, {df!r}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    while high - low > 1e-10 * max(1.0, high):
        middle = (low + high) / 2.0
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2.0


def welch_interval(a, b, level=0.95):
    """{"difference": mean(a) - mean(b), "low", "high": its ``level`` interval, "t", "df"} by
    Welch's method, or None when either side has fewer than 2 values or both have no spread."""
    if len(a) < 2 or len(b) < 2:
        return None
    difference = statistics.mean(a) - statistics.mean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = student_t_quantile(0.5 + level / 2.0, df) * se
    return {"difference": difference, "low": difference - half, "high": difference + half,
            "t": difference / se, "df": df}
