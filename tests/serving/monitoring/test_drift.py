import numpy as np
import pytest
from scipy import stats as sps

from serving.monitoring.drift import (
    Thresholds,
    column_drift,
    drift_report,
    ks_pvalue,
    ks_statistic,
    psi,
    reference_cdf,
)
from serving.monitoring.reference import build_column_reference, build_reference
from serving.monitoring.simulate import draw, reference_columns

SEEDS = 100
WINDOW = 1000


@pytest.fixture(scope="module")
def training():
    return reference_columns()


@pytest.fixture(scope="module")
def reference(training):
    cols = dict(training)
    score = cols.pop("score")
    return build_reference(cols, score)


def _alerts(report):
    return [(c.name, a) for c in report for a in c.alerts]


def test_reference_cdf_is_exact_at_quantiles_and_keeps_point_masses():
    ref = build_column_reference(np.r_[np.zeros(700), np.arange(1, 301, dtype=float)])
    q = np.asarray(ref.quantiles)
    assert reference_cdf(ref, np.array([0.0]))[0] == pytest.approx(0.7, abs=0.005)
    assert reference_cdf(ref, np.array([0.0]), side="left")[0] == 0.0
    assert reference_cdf(ref, np.array([q[-1] + 1]))[0] == 1.0
    assert np.all(np.diff(reference_cdf(ref, np.linspace(-1, 301, 500))) >= 0)


def test_ks_from_quantiles_matches_the_full_two_sample_test(training):
    """The documented approximation: statistic within 0.01, same verdict, on several shapes."""
    ref_x = training["spend_7d"]
    ref = build_column_reference(ref_x)
    rng = np.random.default_rng(7)
    for shift in (0.0, 0.05, 0.2):
        live = rng.lognormal(4.0 + shift, 1.0, 2000)
        full = sps.ks_2samp(live, ref_x[~np.isnan(ref_x)], method="asymp")
        d = ks_statistic(ref, live)
        assert d == pytest.approx(full.statistic, abs=0.01)
        p = ks_pvalue(d, live.size, int((~np.isnan(ref_x)).sum()))
        assert (p < 0.01) == (full.pvalue < 0.01)


def test_psi_is_small_on_same_distribution_and_large_on_a_shift(training):
    ref = build_column_reference(training["amount"])
    rng = np.random.default_rng(1)
    same = rng.normal(50, 20, WINDOW)
    moved = rng.normal(70, 20, WINDOW)  # one standard deviation
    assert psi(ref, same) < 0.05
    assert psi(ref, moved) > 0.5


def test_ks_pvalue_is_calibrated_under_no_drift(training):
    """Over many seeds the approximate test rejects at most about as often as its level says."""
    ref = build_column_reference(training["amount"])
    m = training["amount"].size
    rejections = 0
    for seed in range(200):
        live = np.random.default_rng(seed).normal(50, 20, WINDOW)
        rejections += ks_pvalue(ks_statistic(ref, live), WINDOW, m) < 0.05
    # Binomial(200, 0.05): mean 10, 99.9 % quantile 21
    assert rejections <= 21


def test_no_alert_on_undrifted_windows_over_many_seeds(reference):
    """False alarms at the default thresholds, and with the PSI gate off (the tests alone)."""
    default, tests_only = 0, 0
    no_gate = Thresholds(psi=0.0, null_margin=0.0, out_of_range=0.0)
    for seed in range(SEEDS):
        live = draw(np.random.default_rng(1000 + seed), WINDOW)
        default += bool(_alerts(drift_report(live, reference)))
        tests_only += bool(_alerts(drift_report(live, reference, no_gate)))
    # family-wise alpha 0.01 per window: Binomial(100, 0.01) exceeds 4 with probability < 0.4 %
    assert default == 0
    assert tests_only <= 4


def _stream(seed: int, onset: int, total: int, shift: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    before, after = draw(rng, onset), draw(rng, total - onset, shift=shift)
    return {k: np.concatenate([before[k], after[k]]) for k in before}


@pytest.mark.parametrize("seed", range(5))
def test_injected_drift_is_detected_within_one_window(reference, seed):
    onset, total, step = 3000, 3000 + 2 * WINDOW, 50
    stream = _stream(seed, onset, total, shift=1.0)
    first = None
    for end in range(WINDOW, total + 1, step):
        window = {k: v[end - WINDOW : end] for k, v in stream.items()}
        report = drift_report(window, reference)
        if any(c.drifted for c in report):
            first = end
            break
    assert first is not None, "drift of one standard deviation was never detected"
    assert onset < first <= onset + WINDOW
    drifted = {c.name for c in report if c.drifted}
    assert "amount" in drifted
    assert drifted <= {"amount", "score"}  # the score moves with amount; nothing else did


def test_null_rate_and_out_of_range_are_flagged(reference):
    live = draw(np.random.default_rng(5), WINDOW)
    live["spend_7d"][:200] = np.nan  # 20 % + 2 % missing vs 2 % at training time
    live["txn_count_24h"][:50] = 1e6  # 5 % impossible values
    by_name = {c.name: c for c in drift_report(live, reference)}
    assert "null_rate" in by_name["spend_7d"].alerts
    assert by_name["spend_7d"].null_rate == pytest.approx(0.2 + 0.02, abs=0.02)
    assert "out_of_range" in by_name["txn_count_24h"].alerts
    assert by_name["txn_count_24h"].out_of_range_rate == pytest.approx(0.05)
    assert not by_name["amount"].alerts


def test_small_windows_are_measured_but_not_judged(reference):
    live = draw(np.random.default_rng(3), 50, shift=3.0)
    c = column_drift("amount", reference.features["amount"], live["amount"])
    assert c.psi > 1 and c.alerts == []
    assert sum(c.live_hist) == pytest.approx(1.0)
    assert c.to_dict()["rows"] == 50
