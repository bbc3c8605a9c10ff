"""Welch's interval and the Student t quantile against printed tables and closed forms."""

import json
import math
import os

import pytest

from significance import regularized_incomplete_beta, student_t_cdf, student_t_quantile, welch_interval
from tests.conftest import ROOT


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281),
                                   (30, 2.0423), (1000, 1.9623)])
def test_the_975_quantile_matches_the_printed_table(df, t):
    assert student_t_quantile(0.975, df) == pytest.approx(t, abs=5e-5)
    assert student_t_quantile(0.025, df) == pytest.approx(-t, abs=5e-5)


def test_the_cdf_has_its_closed_forms_at_one_and_two_degrees_of_freedom():
    for t in (-3.0, -0.4, 0.0, 0.7, 5.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


@pytest.mark.parametrize("x", [0.05, 0.3, 0.7, 0.99])
def test_the_incomplete_beta_has_its_closed_forms(x):
    assert regularized_incomplete_beta(x, 1, 1) == pytest.approx(x, abs=1e-13)
    assert regularized_incomplete_beta(x, 2.5, 1) == pytest.approx(x ** 2.5, abs=1e-13)
    assert regularized_incomplete_beta(x, 1, 3.5) == pytest.approx(1 - (1 - x) ** 3.5, abs=1e-13)


def test_welch_reproduces_the_two_seed_lars_loss_of_the_200_epoch_study():
    # Issue 54's reading of results/study200 (two seeds per cell): LARS loses 1.33 points from
    # batch 128 to 8192, Welch t = 6.3 on about 1.2 degrees of freedom, two-sided p about 0.07.
    cells = json.load(open(os.path.join(ROOT, "results", "study200", "results.json")))["cells"]

    def test_top1(batch, peak):
        return [c["final_top1"] for c in cells if (c["batch_size"], c["with_lars"], c["recipe"], c["status"])
                == (batch, True, "no_zero_init", "finished") and c["peak_lr"] == pytest.approx(peak) and c["seed"] < 2]

    small, large = test_top1(128, 0.5), test_top1(8192, 2.0)
    assert len(small) == len(large) == 2
    result = welch_interval(small, large)
    assert result["difference"] == pytest.approx(1.325, abs=1e-9)
    assert round(result["t"], 1) == 6.3 and round(result["df"], 1) == 1.2
    assert 2 * (1 - student_t_cdf(result["t"], result["df"])) == pytest.approx(0.07, abs=0.005)
    assert result["low"] < 0 < result["high"], "two seeds cannot exclude no loss at 95 %"


def test_welch_needs_two_values_a_side_and_some_spread():
    assert welch_interval([1.0], [0.0, 1.0]) is None
    assert welch_interval([1.0, 1.0], [0.0, 0.0]) is None
    equal_n = welch_interval([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # equal variances: df = 2n - 2
    assert equal_n["df"] == pytest.approx(4.0) and equal_n["difference"] == pytest.approx(1.0)
    assert equal_n["high"] - 1.0 == pytest.approx(2.7764 * math.sqrt(2 / 3), abs=1e-4)
