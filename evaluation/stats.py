"""Uncertainty over seeds and prompts: the intervals, verdicts and paired comparisons every table
reports (issue 18's protocol).

A metric of one model is a grid ``x[s, p]``: seed ``s`` (an independently trained model, sampled
with its seed) and test prompt ``p`` (the same prompts for every seed and model: a crossed design).
Its estimate is the grid mean. Its interval treats seeds and prompts as random effects,
x[s, p] = m + a_s + b_p + e_sp, whose grid mean has the variance
sigma_a^2 / S + sigma_b^2 / P + sigma_e^2 / (S P). The two-way ANOVA mean squares estimate it without
bias: E[MS_seed + MS_prompt - MS_resid] / (S P) is exactly that variance. It is floored at
MS_resid / (S P) (never below the cells' own noise); where the floor binds (no seed or prompt effect
at all) the estimate is conservative, not unbiased. The interval is Student's t with Satterthwaite's
degrees of freedom (few when the seed effect dominates: with 3 seeds close to 2; floored at 1). With
one seed it is the t-interval over prompts, which cannot see the seed variance. With 2 seeds and a
real seed effect it undercovers slightly (about 91% measured); with 3, 95-96%.

Why not the two-way bootstrap (resample seeds and prompts independently)? Measured on simulated
grids of 3 seeds x 60 prompts: it covers a true zero 99.75% of the time for a nominal 95% when cells
are independent (it counts the residual variance twice) and 77-87% when seeds differ (three seeds
resampled understate their variance). This interval, on paired differences (tests/test_stats.py):
95.7% with prompt x model interactions, 92% with seed effects as well, 99% with pure cell noise (the
floor at MS_resid).

``t_interval``: Student's t over per-seed values, for quantities without per-prompt values (lm-eval's
scores). A verdict on a constraint uses one-sided 95% bounds of the pooled mean: "met" when the bound
is on the feasible side, "violated" when the opposite bound is on the infeasible side, otherwise
"undecided" (a band [lo, hi] is met when both one-sided bounds are inside it, an intersection-union
test at the same level; a band narrow against the interval can be called violated by one side's 5%
plus the other's). A paired comparison applies the same interval to the grid of differences
between two models on the same seeds and prompts.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi): the two-sided Student-t interval of the mean of ``values`` (one per seed);
    lo and hi are NaN with fewer than two values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return m, float(m - half), float(m + half)


def _grid(x) -> np.ndarray:
    g = np.asarray(x, dtype=float)
    if g.ndim == 1:
        g = g[None, :]
    if g.ndim != 2 or not g.size:
        raise ValueError(f"expected a (seeds, prompts) grid, got shape {g.shape}")
    if not np.isfinite(g).all():
        bad = np.argwhere(~np.isfinite(g))[0]
        raise ValueError(f"the (seeds, prompts) grid holds a non-finite value at seed row {bad[0]}, prompt {bad[1]}: "
                         f"fix the metric file it came from")
    return g


def mean_variance(x) -> tuple[float, float, float]:
    """(grid mean, estimated variance of the grid mean, degrees of freedom) under the crossed
    random-effects model (module docstring): (MS_seed + MS_prompt - MS_resid) / (S P), floored at
    MS_resid / (S P), with Satterthwaite's degrees of freedom, floored at 1 (below 1 the t quantile
    explodes without gaining coverage: 2 seeds give df < 1 in a fifth to a half of grids); with one
    seed s^2 / P and P - 1."""
    g = _grid(x)
    S, P = g.shape
    m = float(g.mean())
    if P < 2:
        raise ValueError(f"an interval needs at least 2 prompts, got a grid of shape {g.shape}")
    if S == 1:
        return m, float(g.var(ddof=1) / P), float(P - 1)
    rows, cols = g.mean(axis=1), g.mean(axis=0)
    ms_s = P * float(((rows - m) ** 2).sum()) / (S - 1)
    ms_p = S * float(((cols - m) ** 2).sum()) / (P - 1)
    ms_e = float(((g - rows[:, None] - cols[None, :] + m) ** 2).sum()) / ((S - 1) * (P - 1))
    num = max(ms_s + ms_p - ms_e, ms_e)
    if num <= 0:  # a constant grid (or an additive one without noise and effects): no uncertainty
        return m, 0.0, float("inf")
    den = ms_s**2 / (S - 1) + ms_p**2 / (P - 1) + ms_e**2 / ((S - 1) * (P - 1))
    return m, num / (S * P), max(1.0, num**2 / den)


def _bounds(x, q: float) -> tuple[float, float, float]:
    from scipy import stats

    m, v, df = mean_variance(x)
    h = float(stats.t.ppf(q, df) * np.sqrt(v)) if v > 0 else 0.0
    return m, m - h, m + h


def interval(x, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi): the grid mean and its two-sided ``level`` interval (module docstring)."""
    return _bounds(x, 0.5 + level / 2)


def one_sided(x, level: float = LEVEL) -> tuple[float, float]:
    """(lower, upper) one-sided ``level`` bounds of the grid mean: the mean is >= lower (and <= upper)
    with confidence ``level`` each."""
    _, lo, hi = _bounds(x, level)
    return lo, hi


def verdict(x, lo: float | None = None, hi: float | None = None, level: float = LEVEL) -> dict:
    """The verdict on "lo <= mean <= hi" (either side may be None: a one-sided bound) from the grid
    ``x``: met / violated / undecided, the one-sided bounds behind it, and the share of seeds whose
    own mean satisfies the constraint."""
    g = _grid(x)
    lower, upper = one_sided(g, level)
    met = (lo is None or lower >= lo) and (hi is None or upper <= hi)
    violated = (lo is not None and upper < lo) or (hi is not None and lower > hi)
    seed_means = g.mean(axis=1)
    ok = np.ones_like(seed_means, dtype=bool)
    if lo is not None:
        ok &= seed_means >= lo
    if hi is not None:
        ok &= seed_means <= hi
    return {"verdict": "met" if met else "violated" if violated else "undecided", "lower": lower, "upper": upper,
            "seeds_met": float(ok.mean()), "n_seeds": int(g.shape[0])}


def combine(verdicts: list[str]) -> str:
    """The verdict on several constraints at once: met when all are met, violated when any is."""
    if all(v == "met" for v in verdicts):
        return "met"
    return "violated" if "violated" in verdicts else "undecided"


def paired(a, b, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi) of model a minus model b on the same seeds and prompts: the interval of the grid
    of paired differences."""
    ga, gb = _grid(a), _grid(b)
    if ga.shape != gb.shape:
        raise ValueError(f"paired grids differ in shape: {ga.shape} vs {gb.shape}")
    return interval(ga - gb, level)
