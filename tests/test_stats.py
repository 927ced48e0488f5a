"""The intervals, verdicts and paired comparisons of evaluation/stats.py against closed forms and
simulations with a known answer."""
import math

import numpy as np
import pytest

from evaluation import stats


def test_t_interval_against_a_hand_computed_case():
    # values 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.302653 (tables), half-width 4.302653 / sqrt(3)
    m, lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 / math.sqrt(3)
    assert m == 2.0 and lo == pytest.approx(2 - half, abs=1e-9) and hi == pytest.approx(2 + half, abs=1e-9)
    # 90%: t_{0.95, 2} = 2.919986
    _, lo90, _ = stats.t_interval([1.0, 2.0, 3.0], level=0.90)
    assert lo90 == pytest.approx(2 - 2.919985580355516 / math.sqrt(3), abs=1e-9)
    m, lo, hi = stats.t_interval([5.0])
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)


def test_random_effects_interval_against_a_hand_computed_grid():
    # g = [[1, 2, 3], [3, 4, 8]]: mean 3.5; seed means 2, 5; prompt means 2, 3, 5.5
    # MS_seed = 3 * ((2-3.5)^2 + (5-3.5)^2) / 1 = 13.5; MS_prompt = 2 * (2.25 + 0.25 + 4) / 2 = 6.5
    # residuals e = g - row - col + mean: [[0.5, 0.5, -1], [-0.5, -0.5, 1]], MS_resid = 3 / 2 = 1.5
    # variance of the mean (13.5 + 6.5 - 1.5) / 6 = 18.5 / 6; df = 18.5^2 / (13.5^2 + 6.5^2 / 2 + 1.5^2 / 2)
    m, v, df = stats.mean_variance([[1, 2, 3], [3, 4, 8]])
    assert m == 3.5 and v == pytest.approx(18.5 / 6) and df == pytest.approx(18.5**2 / (13.5**2 + 6.5**2 / 2 + 1.5**2 / 2))
    from scipy import stats as st

    _, lo, hi = stats.interval([[1, 2, 3], [3, 4, 8]])
    half = st.t.ppf(0.975, df) * math.sqrt(18.5 / 6)
    assert lo == pytest.approx(3.5 - half) and hi == pytest.approx(3.5 + half)
    # one seed: the t-interval over prompts, s^2 / P with P - 1 df
    m, v, df = stats.mean_variance([[1.0, 2.0, 3.0, 6.0]])
    assert m == 3.0 and v == pytest.approx(np.var([1, 2, 3, 6], ddof=1) / 4) and df == 3


def _simulate(rng, n, sd_seed, sd_prompt, sd_cell, seeds=3, prompts=60):
    return [rng.normal(scale=sd_seed, size=(seeds, 1)) + rng.normal(scale=sd_prompt, size=(1, prompts))
            + rng.normal(scale=sd_cell, size=(seeds, prompts)) for _ in range(n)]


@pytest.mark.parametrize("sd_seed", [0.0, 0.5])
def test_variance_estimate_is_unbiased_for_the_variance_of_the_grid_mean(sd_seed):
    """Over many grids from one random-effects model, the mean estimated variance equals the
    variance of the grid mean, in closed form sd_seed^2 / S + sd_prompt^2 / P + sd_cell^2 / (S P)."""
    rng = np.random.default_rng(5)
    grids = _simulate(rng, 4000, sd_seed, 1.0, 0.5)
    est = np.mean([stats.mean_variance(g)[1] for g in grids])
    exact = sd_seed**2 / 3 + 1.0 / 60 + 0.25 / 180
    assert est == pytest.approx(exact, rel=0.05)
    assert np.var([g.mean() for g in grids]) == pytest.approx(exact, rel=0.08)  # the simulation itself


def test_interval_of_a_constant_grid_is_the_point_and_verdicts_follow_the_bounds():
    m, lo, hi = stats.interval(np.full((3, 10), 0.25))
    assert m == lo == hi == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=0.5, size=(3, 300))
    assert stats.verdict(1.0 + noise, lo=0.0)["verdict"] == "met"  # 1.0 is ~35 s.e. above
    assert stats.verdict(-1.0 + noise, lo=0.0)["verdict"] == "violated"
    assert stats.verdict(noise - noise.mean(), lo=0.0)["verdict"] == "undecided"  # exactly on the bound
    v = stats.verdict(10 + noise, lo=8, hi=16)
    assert v["verdict"] == "met" and v["lower"] < 10 < v["upper"]
    assert stats.verdict(17 + noise, lo=8, hi=16)["verdict"] == "violated"
    assert stats.verdict(16 + noise - noise.mean(), lo=8, hi=16)["verdict"] == "undecided"
    # the share of seeds: seed means 1, -1, 2 against >= 0 -> 2 of 3
    g = np.array([[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0]])
    assert stats.verdict(g, lo=0.0)["seeds_met"] == pytest.approx(2 / 3)
    assert stats.combine(["met", "met"]) == "met" and stats.combine(["met", "undecided"]) == "undecided"
    assert stats.combine(["undecided", "violated"]) == "violated"


def test_paired_interval_recovers_a_fixed_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 200)) + rng.normal(size=(3, 1))
    d, lo, hi = stats.paired(a, a + 0.3)  # b = a + 0.3 exactly: every paired difference is -0.3
    assert d == pytest.approx(-0.3) and lo == pytest.approx(-0.3) and hi == pytest.approx(-0.3)
    b = a + 0.3 + rng.normal(scale=0.2, size=a.shape)  # the shift plus independent noise
    d, lo, hi = stats.paired(a, b)
    assert lo < -0.3 < hi and hi - lo < 0.15  # 3 seeds: few degrees of freedom, even without a seed effect


@pytest.mark.parametrize("sd_seed,sd_inter,low,high", [
    (0.0, 0.5, 0.94, 0.97),   # prompt x model interaction, no seed effect: nominal
    (0.3, 0.5, 0.90, 0.94),   # seed effects as well: slightly liberal (Satterthwaite, 3 seeds)
    (0.0, 0.0, 0.975, 1.0),   # nothing but cell noise: conservative (the variance floor MS_resid)
])
def test_paired_interval_covers_zero_at_the_stated_rate_for_identical_methods(sd_seed, sd_inter, low, high):
    """Two methods with the same distribution on the same 60 prompts and 3 seeds (a shared prompt
    effect, each method's own prompt interaction, seed effects and noise): how often the 95% interval
    of the difference covers the true 0, over 2,000 experiments (measured: 95.7%, 92.1%, 99.0%)."""
    rng = np.random.default_rng(4)
    covered, n = 0, 2000
    for _ in range(n):
        prompt = rng.normal(size=(1, 60))
        a, b = (prompt + rng.normal(scale=sd_inter, size=(1, 60)) + rng.normal(scale=sd_seed, size=(3, 1))
                + rng.normal(scale=0.5, size=(3, 60)) for _ in range(2))
        _, lo, hi = stats.paired(a, b)
        covered += lo <= 0 <= hi
    assert low <= covered / n <= high, covered / n  # MC s.e. of a rate near 0.95: 0.005


def test_degrees_of_freedom_are_floored_at_one():
    """Two seeds far apart and four prompts: Satterthwaite's df is 0.99986 (by hand below), which would
    put the t quantile above 12.7; floored at 1, the half-width is t_{0.975, 1} = 12.706 standard errors."""
    g = np.array([[0.0, 0.3, 0.1, 0.2], [5.0, 5.1, 5.3, 4.9]])
    # seed means 0.15, 5.075; prompt means 2.5, 2.7, 2.7, 2.55; grand mean 2.6125
    ms_s = 4 * ((0.15 - 2.6125) ** 2 + (5.075 - 2.6125) ** 2)
    ms_p = 2 * sum((c - 2.6125) ** 2 for c in (2.5, 2.7, 2.7, 2.55)) / 3
    e = g - np.array([[0.15], [5.075]]) - np.array([2.5, 2.7, 2.7, 2.55]) + 2.6125
    ms_e = float((e**2).sum()) / 3
    raw_df = (ms_s + ms_p - ms_e) ** 2 / (ms_s**2 + ms_p**2 / 3 + ms_e**2 / 3)
    assert raw_df == pytest.approx(0.99986, abs=1e-5)
    m, v, df = stats.mean_variance(g)
    assert df == 1.0 and v == pytest.approx((ms_s + ms_p - ms_e) / 8)
    _, lo, hi = stats.interval(g)
    assert (hi - lo) / 2 == pytest.approx(12.706204736174707 * math.sqrt(v))


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="non-finite value at seed row 1, prompt 2"):
        stats.interval([[0.0, 1.0, 2.0], [0.0, 1.0, float("nan")]])
    with pytest.raises(ValueError, match="differ in shape"):
        stats.paired(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="grid"):
        stats.interval(np.zeros((0,)))
