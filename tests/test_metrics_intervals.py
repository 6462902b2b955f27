"""Bootstrap intervals of FID, KID, IS, precision/recall and density/coverage
(``zoo.metrics.intervals``, ``evaluate(bootstrap=B)``).

Figures measured on the CI machine (2 CPU cores) are quoted beside each threshold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo import data, metrics
from zoo.core import ConfigError
from zoo.metrics import intervals, registry

D = 8


pytestmark = pytest.mark.usefixtures("cache_env")


def _exact_gaussian_sample(n: int, mu: torch.Tensor, cov: torch.Tensor, seed: int):
    """``n`` points whose sample mean and (n-1) covariance are exactly ``mu`` and ``cov``:
    the reference side with the population's statistics, so FID has its closed form."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mu.shape[0], generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    lz = torch.linalg.cholesky(torch.cov(z.T))
    white = torch.linalg.solve_triangular(lz, z.T, upper=False).T
    return white @ torch.linalg.cholesky(cov).T + mu


def _closed_form_fid(mu1, s1, mu2, s2) -> float:
    from scipy import linalg

    covmean = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    return float(((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * np.trace(covmean))


def _population():
    g = torch.Generator().manual_seed(1)
    mu_fake = torch.full((D,), 0.15, dtype=torch.float64)
    a = torch.randn(D, D, generator=g, dtype=torch.float64) / D ** 0.5
    s_fake = torch.eye(D, dtype=torch.float64) * 0.8 + a @ a.T * 0.5
    mu_real = torch.zeros(D, dtype=torch.float64)
    s_real = torch.eye(D, dtype=torch.float64)
    return mu_fake, s_fake, mu_real, s_real


def test_frechet_distance_equals_torch_fidelity_on_the_full_sample():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(0)
    fake = torch.randn(700, 32, generator=g) * 1.3 + 0.2
    real = torch.randn(900, 32, generator=g)
    tf = fid_statistics_to_metric(fid_features_to_statistics(fake),
                                  fid_features_to_statistics(real), False)
    tf = tf["frechet_inception_distance"]
    mine = intervals.frechet_distance(fake, real)
    assert mine == pytest.approx(tf, rel=1e-6)  # measured 1.1e-9 relative


def test_fid_interval_coverage_on_gaussian_features():
    """Fake features N(mu1, S1), N=500, D=8, 100 repetitions of 200 draws; the reference
    has exactly the population's mean and covariance, so the target is the closed-form FID
    (1.077 here), which is also the large-N FID. The plug-in FID is biased upward at N=500
    (its mean over the repetitions is measured 1.144), and the bootstrap draws are biased
    upward again by about as much against each sample's figure.

    Measured (100 repetitions): the default interval (the percentile interval centred on
    the figure, shifted by the draws' bias) covers the true FID 90/100 times; the plain
    percentile interval, one bias higher, 80/100 times: the plug-in bias costs it coverage.
    Neither corrects the figure's own bias (a basic/BCa interval would); the band asserted
    for the default is 0.85-0.99, the plain one is only reported (run with -s).
    """
    mu1, s1, mu2, s2 = _population()
    truth = _closed_form_fid(mu1, s1, mu2, s2)
    real = _exact_gaussian_sample(5000, mu2, s2, seed=2)
    l1 = torch.linalg.cholesky(s1)
    g = torch.Generator().manual_seed(3)
    counts = torch.cat([torch.ones(1, 500, dtype=torch.float64),
                        intervals.resample_counts(500, 200, seed=4)])
    centred = plain = 0
    figures = []
    for _ in range(100):
        fake = torch.randn(500, D, generator=g, dtype=torch.float64) @ l1.T + mu1
        v = intervals.fid_draws(fake, real, counts).numpy()
        figures.append(v[0])
        lo, hi = intervals.percentile_interval(v[1:], centre=v[0])
        centred += lo <= truth <= hi
        lo, hi = intervals.percentile_interval(v[1:])
        plain += lo <= truth <= hi
    print(f"true FID {truth:.4f}, mean plug-in {np.mean(figures):.4f}; coverage: centred "
          f"{centred}/100, plain percentile {plain}/100")
    assert 0.85 <= centred / 100 <= 0.99


def test_draws_on_the_full_sample_are_the_metrics_own_figures():
    g = torch.Generator().manual_seed(0)
    fake = torch.randn(300, 16, generator=g) + 0.3
    real = torch.randn(400, 16, generator=g)
    ones = torch.ones(1, 300, dtype=torch.float64)
    from torch_fidelity.metric_prc import prc_features_to_metric

    tf = prc_features_to_metric(fake, real, prc_neighborhood=3, prc_batch_size=10000,
                                save_cpu_ram=True, verbose=False)
    p, r = intervals.pr_draws(fake, real, ones)
    assert float(p[0]) == pytest.approx(tf["precision"], abs=1e-7)
    assert float(r[0]) == pytest.approx(tf["recall"], abs=1e-7)
    dc = registry.get("dc").compute(real, fake)
    d, c = intervals.dc_draws(fake, real, ones)
    assert (float(d[0]), float(c[0])) == (dc["density"], dc["coverage"])


@pytest.fixture(scope="module")
def evaluated():
    images = data.load("mnist", "train")[0][:600]
    kw = dict(extractor="mnist-classifier", metrics="fid,kid,pr,dc", device="cpu",
              n_reference=2000, announce=False)
    return (metrics.evaluate(images, "mnist", bootstrap=200, **kw),
            metrics.evaluate(images, "mnist", bootstrap=200, **kw),
            metrics.evaluate(images, "mnist", bootstrap=200, seed=1, **kw),
            metrics.evaluate(images, "mnist", bootstrap=0, **kw))


@pytest.mark.slow
def test_intervals_contain_the_figures_and_are_printed(evaluated):
    result = evaluated[0]
    keys = registry.interval_columns("fid,kid,pr,dc")
    assert keys == ("fid", "kid", "precision", "recall", "density", "coverage")
    for key in keys:
        lo, hi = result[f"{key}_ci95"]
        assert lo <= result[key] <= hi, (key, result[key], lo, hi)
    text = metrics.format_result(result)
    lo, hi = result["fid_ci95"]
    assert f"FID        {result['fid']:.3f} [{lo:.3f}, {hi:.3f}]" in text


@pytest.mark.slow
def test_bootstrap_zero_gives_no_interval_and_the_same_figures(evaluated):
    with_ci, without = evaluated[0], evaluated[3]
    assert not [k for k in without if k.endswith("_ci95")] and without["bootstrap"] == 0
    for key in registry.column_keys("fid,kid,pr,dc"):
        assert with_ci[key] == without[key]  # bit for bit: the figures stay torch-fidelity's


@pytest.mark.slow
def test_intervals_are_deterministic_given_the_seed(evaluated):
    a, b, other = evaluated[:3]
    ci = [k for k in a if k.endswith("_ci95")]
    assert len(ci) == 6 and all(a[k] == b[k] for k in ci)
    assert any(a[k] != other[k] for k in ci)


def test_bootstrap_timing_and_errors():
    import time

    g = torch.Generator().manual_seed(0)
    fake, real = torch.randn(2000, 128, generator=g), torch.randn(4000, 128, generator=g)
    t = time.perf_counter()
    out = intervals.bootstrap_intervals({"fid": (fake, real), "kid": (fake, real)}, 200, 0)
    assert set(out) == {"fid_ci95", "kid_ci95"}
    assert time.perf_counter() - t < 60  # measured 3 s on 1 thread
    with pytest.raises(ConfigError, match="bootstrap"):
        metrics.evaluate(data.load("mnist", "train")[0][:50], "mnist", metrics="fid",
                         extractor="mnist-classifier", device="cpu", n_reference=100,
                         bootstrap=-1, announce=False)


def test_an_interval_needs_a_ranked_figure_of_features():
    with pytest.raises(ConfigError, match="interval"):
        registry.register(registry.Metric(
            "spread-ci", function=lambda r, f: {}, reference=True,
            columns=(registry.Column("spread_ci", "", interval=True),)))
    registry.unregister("spread-ci")
    ranked = registry.Column("x_ci", "x", direction=1, tolerance=("abs", 1.0), interval=True)
    refused = [
        {"needs": "images", "function": lambda r, f: {}},  # images are not resampled
        {"train": True, "function": lambda r, f, train: {}},  # nor is the training split
        {"tf_flag": "fid", "tf_results": (("x_ci", "x"),)},  # no per-draw form of this flag
    ]
    for change in refused:
        if "tf_flag" in change:
            registry.BOOTSTRAPPED_TF, keep = ("kid",), registry.BOOTSTRAPPED_TF
        try:
            with pytest.raises(ConfigError, match="interval"):
                registry.register(registry.Metric("x-ci", columns=(ranked,), **change))
        finally:
            if "tf_flag" in change:
                registry.BOOTSTRAPPED_TF = keep
            registry.unregister("x-ci")
    # a function of logits without a reference side (like IS) may have one
    registry.register(registry.Metric("x-ci", columns=(ranked,), needs="logits",
                                      reference=False, function=lambda r, f: {}))
    registry.unregister("x-ci")
    assert registry.interval_columns("is") == ("is",)


# -- IS ---------------------------------------------------------------------------------------

def _logits(n: int, seed: int, classes: int = 10) -> torch.Tensor:
    """Logits of a population with IS about 4: a sharp class guess, classes unequally used."""
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.linspace(1, 3, classes), n, replacement=True, generator=g)
    z = torch.randn(n, classes, generator=g, dtype=torch.float64)
    z[torch.arange(n), y] += 4.0
    return z


@pytest.mark.parametrize("seed", [0, 7])
def test_is_draws_on_the_full_sample_are_torch_fidelitys_figure(seed):
    from torch_fidelity.metric_isc import isc_features_to_metric

    for n in (2000, 1003, 7):
        z = _logits(n, seed)
        tf = isc_features_to_metric(z.float(), min(10, n), True, seed)["inception_score_mean"]
        mine = float(intervals.is_draws(z.float(), torch.ones(1, n, dtype=torch.float64),
                                        seed)[0])
        assert mine == pytest.approx(tf, rel=1e-12)  # measured equal bit for bit


@pytest.mark.slow
def test_is_interval_narrows_with_n_and_covers_the_large_sample_score():
    """200 draws per sample. The target: the IS of the population at the same split size
    (10 splits of N/10), estimated as the mean IS over 40 independent samples. Measured
    on the CI machine: mean widths 0.312 (N=500), 0.163 (N=2000), ratio 1.9 (sqrt(4) = 2
    expected); the centred interval covers the target 40/40 times at both N (nominal 38)."""
    widths, covered = {}, {}
    for n in (500, 2000):
        figures, cis = [], []
        for rep in range(40):
            z = _logits(n, 100 + rep)
            counts = torch.cat([torch.ones(1, n, dtype=torch.float64),
                                intervals.resample_counts(n, 200, seed=rep)])
            v = intervals.is_draws(z, counts, seed=rep).numpy()
            figures.append(v[0])
            lo, hi = intervals.percentile_interval(v[1:], centre=v[0])
            assert lo <= v[0] <= hi
            cis.append((lo, hi))
        target = float(np.mean(figures))
        widths[n] = float(np.mean([hi - lo for lo, hi in cis]))
        covered[n] = sum(lo <= target <= hi for lo, hi in cis)
    print(f"IS interval widths {widths}, coverage of the mean figure {covered} of 40")
    assert 1.5 < widths[500] / widths[2000] < 2.7
    assert all(c >= 32 for c in covered.values())


def test_is_interval_in_evaluate_reuses_the_logits_and_keeps_the_figure(monkeypatch):
    images = data.load("mnist", "train")[0][:600]
    kw = dict(extractor="mnist-classifier", device="cpu", n_reference=500, announce=False)
    calls = []
    from torch_fidelity import utils as tf_utils

    original = tf_utils.create_feature_extractor

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(tf_utils, "create_feature_extractor", counting)
    alone = metrics.evaluate(images, "mnist", metrics="is", bootstrap=100, **kw)
    assert calls == []  # no extraction beyond torch-fidelity's own
    lo, hi = alone["is_ci95"]
    assert lo <= alone["is"] <= hi and set(k for k in alone if k.endswith("_ci95")) == {
        "is_ci95"}
    none = metrics.evaluate(images, "mnist", metrics="is", bootstrap=0, **kw)
    assert none["is"] == alone["is"] and none["is_std"] == alone["is_std"]  # bit for bit
    mixed = metrics.evaluate(images, "mnist", metrics="fid,is", bootstrap=100, **kw)
    assert mixed["is"] == alone["is"] and mixed["is_ci95"] == alone["is_ci95"]
    assert calls == []
    text = metrics.format_result(alone)
    assert f"IS         {alone['is']:.3f} ± {alone['is_std']:.3f} [{lo:.3f}, {hi:.3f}]" in text


def test_fid_draws_through_the_gram_matrix_agree_with_the_covariance_form():
    """N < D (InceptionV3: 2000 samples of 2048 features) takes the N x N Gram form; it is
    the same figure: measured 3e-8 relative at N=2000, D=2048 (74 s for B=200 on 1 thread
    against ~7 s per draw for the D x D form)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(5)
    fake = torch.randn(60, 100, generator=g) * 1.2 + 0.1
    real = torch.randn(300, 100, generator=g)
    counts = torch.cat([torch.ones(1, 60, dtype=torch.float64),
                        intervals.resample_counts(60, 20, seed=1)])
    dense = intervals.fid_draws(fake, real, counts, gram=False)
    gram = intervals.fid_draws(fake, real, counts)  # the default at N < D
    torch.testing.assert_close(gram, dense, rtol=1e-6, atol=0)
    tf = fid_statistics_to_metric(fid_features_to_statistics(fake),
                                  fid_features_to_statistics(real), False)
    assert float(gram[0]) == pytest.approx(tf["frechet_inception_distance"], rel=1e-6)


def test_an_interval_is_moved_onto_the_figure_as_reported():
    """KID as reported is torch-fidelity's mean over random reference subsets, the draws'
    full-sample figure the MMD over the whole reference: the interval keeps its width and
    is moved onto the reported figure, so the figure always sits inside it."""
    g = torch.Generator().manual_seed(0)
    fake = torch.randn(300, 8, generator=g, dtype=torch.float64) + 0.5
    real = torch.randn(400, 8, generator=g, dtype=torch.float64)
    plain = intervals.bootstrap_intervals({"kid": (fake, real)}, 100, 0)["kid_ci95"]
    full = float(intervals.kid_draws(fake, real, torch.ones(1, 300, dtype=torch.float64))[0])
    reported = full + 0.5 * (plain[1] - plain[0]) + 1.0  # well outside the plain interval
    moved = intervals.bootstrap_intervals({"kid": (fake, real)}, 100, 0,
                                          figures={"kid": reported})["kid_ci95"]
    assert not plain[0] <= reported <= plain[1]
    assert moved[0] <= reported <= moved[1]
    assert moved[1] - moved[0] == pytest.approx(plain[1] - plain[0])
    assert moved[0] - plain[0] == pytest.approx(reported - full)


def test_a_64_bit_seed_shuffles_as_its_value_mod_2_32():
    """numpy's legacy RandomState (torch-fidelity's rng_seed) takes [0, 2**32): a zoo seed
    beyond it, or negative, is reduced, not a ValueError."""
    z = _logits(50, 0)
    ones = torch.ones(1, 50, dtype=torch.float64)
    for seed in (2**63 - 1, 2**64 - 1, -1, -(2**63)):
        assert intervals.tf_seed(seed) == seed % 2**32
        assert torch.equal(intervals.is_draws(z, ones, seed),
                           intervals.is_draws(z, ones, seed % 2**32))


def test_replicates_are_the_draws_behind_the_interval_moved_with_it():
    """``replicates=``: each column's B draws, moved onto the reported figure as the
    interval is, so their (bias-shifted) percentile interval is the interval itself."""
    g = torch.Generator().manual_seed(1)
    fake = torch.randn(200, 8, generator=g, dtype=torch.float64) + 0.5
    real = torch.randn(300, 8, generator=g, dtype=torch.float64)
    kept: dict = {}
    out = intervals.bootstrap_intervals({"fid": (fake, real), "kid": (fake, real)}, 50, 0,
                                        figures={"kid": 0.3}, replicates=kept)
    assert sorted(kept) == ["fid", "kid"] and all(len(v) == 50 for v in kept.values())
    full = float(intervals.frechet_distance(fake, real))
    assert intervals.percentile_interval(kept["fid"], centre=full) == pytest.approx(
        out["fid_ci95"])
    assert intervals.percentile_interval(kept["kid"], centre=0.3) == pytest.approx(
        out["kid_ci95"])


def test_a_spread_of_zero_is_not_printed():
    """KID's spread over subsets is 0 when N is one subset (1000 samples): `± 0.00000`
    would read as an exact figure, so only the interval is shown."""
    base = {"dataset": "mnist", "split": "test", "n_generated": 1000, "n_reference": 1000,
            "extractor": "mnist-classifier", "extractor_weights_sha256": "0" * 64,
            "extractor_choice": "explicit",
            "kid": 0.0365, "kid_ci95": [0.0334, 0.0391]}
    one_subset = metrics.format_result({**base, "kid_std": 0.0})
    assert "KID        0.03650 [0.03340, 0.03910]" in one_subset and "±" not in one_subset
    assert "KID        0.03650 ± 0.00100 [" in metrics.format_result({**base, "kid_std": 0.001})
