"""The scaling-law toolkit: laws, the vectorised fitter (against scipy), bootstrap, optimum."""

import math

import numpy as np
import pandas as pd
import pytest

from shared import scaling

pytestmark = pytest.mark.usefixtures("one_thread")

TRUE = {"a": 6.0, "b": 6.5, "e": 0.5, "alpha": 0.34, "beta": 0.28}


def chinchilla_points(noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e7, 1e10, 7), 6)
    d = np.tile(np.geomspace(1e9, 1e12, 6), 7)
    loss = scaling.chinchilla.predict(TRUE, N=n, D=d) * np.exp(rng.normal(0, noise, n.size))
    return pd.DataFrame({"N": n, "D": d, "loss": loss})


def test_chinchilla_formula_is_e_plus_two_power_laws():
    got = scaling.chinchilla.predict(TRUE, N=1e9, D=2e10)
    want = math.exp(0.5) + math.exp(6.0) / 1e9**0.34 + math.exp(6.5) / 2e10**0.28
    assert got == pytest.approx(want, rel=1e-12)


def test_fit_recovers_the_parameters_of_noiseless_data():
    fit = scaling.fit(scaling.chinchilla, chinchilla_points(), "loss", starts=64)
    for name, value in TRUE.items():
        assert fit.params[name] == pytest.approx(value, abs=1e-4), name
    assert fit.r2 > 0.999999
    assert fit.values["A"] == pytest.approx(math.exp(fit.params["a"]))


def test_vectorised_newton_reaches_the_objective_of_scipy_lbfgs_from_the_same_starts():
    data = chinchilla_points(noise=0.01, seed=1)
    starts = scaling.chinchilla.start_points(12, seed=3)
    newton = scaling.fit(scaling.chinchilla, data, "loss", starts=starts)
    lbfgs = scaling.fit(scaling.chinchilla, data, "loss", starts=starts, method="lbfgs")
    assert newton.loss <= lbfgs.loss * (1 + 1e-6)
    polished = scaling.fit(scaling.chinchilla, data, "loss", starts=newton.theta[None], method="lbfgs")
    assert polished.loss >= newton.loss * (1 - 1e-7), "scipy cannot improve on the Newton optimum"


def test_grid_starts_are_hoffmanns_4500():
    assert scaling.chinchilla.start_points("grid").shape == (4500, 5)


def test_fixed_parameters_stay_at_their_value():
    fit = scaling.fit(scaling.chinchilla, chinchilla_points(noise=0.01), "loss", starts=16, fixed={"beta": 0.3})
    assert fit.params["beta"] == 0.3
    assert fit.params["alpha"] != pytest.approx(0.34, abs=1e-9)


def test_bootstrap_intervals_cover_the_truth_and_repeat_with_the_seed():
    data = chinchilla_points(noise=0.01, seed=2)
    fit = scaling.fit(scaling.chinchilla, data, "loss", starts=32)
    boot = scaling.bootstrap(fit, data, "loss", n=40, seed=5)
    ci = boot.ci(0.95)
    assert len(boot.samples) == 40
    assert ci.loc["alpha", "low"] < ci.loc["alpha", "high"], "resamples differ"
    assert ci.loc["alpha", "low"] - 0.02 <= TRUE["alpha"] <= ci.loc["alpha", "high"] + 0.02
    again = scaling.bootstrap(fit, data, "loss", n=40, seed=5)
    pd.testing.assert_frame_equal(boot.samples, again.samples)
    assert boot.predict(N=[1e9], D=[1e11]).shape == (40, 1)


def test_errors_are_zero_for_exact_predictions_and_count_relative_misses():
    data = chinchilla_points()
    fit = scaling.fit(scaling.chinchilla, data, "loss", starts=16)
    exact = scaling.errors(fit, data, "loss")
    assert exact["mre"] < 1e-6 and exact["r2"] == pytest.approx(1.0, abs=1e-9)
    off = scaling.errors(fit, data.assign(loss=data["loss"] * 1.1), "loss")
    assert off["mre"] == pytest.approx(1 - 1 / 1.1, rel=1e-4)


def test_compute_optimal_matches_chinchillas_closed_form():
    fit = scaling.fit(scaling.chinchilla, chinchilla_points(), "loss", starts=16)
    a, b, alpha, beta = math.exp(fit.params["a"]), math.exp(fit.params["b"]), fit.params["alpha"], fit.params["beta"]
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    for budget in (1e20, 1e24):
        row = scaling.compute_optimal(fit, budget).iloc[0]
        assert row["N"] == pytest.approx(g * (budget / 6) ** (beta / (alpha + beta)), rel=1e-4)
        assert row["N"] * row["D"] * 6 == pytest.approx(budget)


def qqt_reference(n, pool, a, b, tau, d):
    """The authors' recursion written out with a Python loop (objective.func_effective_utility)."""
    full = int(n // pool)
    y = (a * min(pool, n) / 1e5) ** b + d
    for k in range(1, full + 1):
        hi, lo = a * min(pool * (k + 1), n) / 1e5, a * pool * k / 1e5
        y *= (hi / lo) ** (b * 0.5 ** (k / tau))
    return y


def test_qqt_law_is_the_repetition_recursion():
    params = {"a": 0.02, "b": -0.15, "tau": 3.0, "d": 0.1}
    n = np.array([500.0, 1000.0, 2500.0, 7300.0, 20000.0])
    got = scaling.qqt.predict(params, n=n, pool=1000.0)
    want = [qqt_reference(v, 1000.0, **params) for v in n]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(np.diff(got) < 0), "more samples, lower error"
    fresh = scaling.qqt.predict(params, n=20000.0, pool=1e9)
    assert fresh < got[-1], "repeating a small pool is worth less than fresh data"


def test_qqt_pool_of_one_bucket_is_the_bucket_and_mixes_utilities():
    one = scaling.qqt_pool([4000.0], 1000.0, a=0.02, bs=[-0.15], taus=[3.0], d=0.1)
    law = scaling.qqt.predict({"a": 0.02, "b": -0.15, "tau": 3.0, "d": 0.1}, n=4000.0, pool=1000.0)
    assert one[0] == pytest.approx(float(law), rel=1e-12)
    mixed = scaling.qqt_pool([4000.0], 1000.0, a=0.02, bs=[-0.2, -0.1], taus=[3.0, 3.0], d=0.1)
    mean_b = scaling.qqt.predict({"a": 0.02, "b": -0.15, "tau": 3.0, "d": 0.1}, n=4000.0, pool=1000.0)
    assert mixed[0] == pytest.approx(float(mean_b), rel=1e-12), "equal taus: the pool has the mean utility"


def test_qqt_fit_recovers_utility_and_half_life():
    true = {"a": 0.02, "b": -0.2, "tau": 4.0, "d": 0.05}
    n = np.geomspace(200, 40000, 25)
    y = scaling.qqt.predict(true, n=n, pool=1000.0)
    fit = scaling.fit(scaling.qqt, {"n": n, "pool": np.full_like(n, 1000.0)}, y, starts=64, fixed={"a": 0.02})
    assert fit.params["b"] == pytest.approx(-0.2, abs=1e-3)
    assert fit.params["tau"] == pytest.approx(4.0, rel=1e-2)


def test_sigmoid_fits_in_linear_space():
    true = {"A": 0.6, "B": 1.5, "c": math.log(1e4), "R0": 0.1}
    c = np.geomspace(1e2, 1e6, 30)
    r = scaling.sigmoid.predict(true, C=c)
    fit = scaling.fit(scaling.sigmoid, {"C": c}, r, starts=64)
    assert fit.space == "linear"
    assert fit.params["A"] == pytest.approx(0.6, abs=1e-4)
    assert fit.values["C_mid"] == pytest.approx(1e4, rel=1e-3)


def test_custom_law_with_a_box():
    law = scaling.Law(name="power", formula="y = a + b n^-c", inputs=("n",), params=("a", "b", "c"),
                      fn=lambda p, x: p["a"] + p["b"] * x["n"] ** (-p["c"]),
                      box={"a": (0, 1), "b": (0, 5), "c": (0.1, 1.5)})
    n = np.geomspace(10, 1e4, 20)
    fit = scaling.fit(law, {"n": n}, 0.2 + 3 * n**-0.5, starts=32)
    assert fit.params["c"] == pytest.approx(0.5, abs=1e-5)


def test_bad_inputs_fail_in_one_line():
    data = chinchilla_points()
    with pytest.raises(ValueError, match="needs inputs N, D; missing D"):
        scaling.fit(scaling.chinchilla, data.drop(columns="D"), "loss")
    with pytest.raises(ValueError, match="log-space residuals need y > 0"):
        scaling.fit(scaling.chinchilla, data.assign(loss=-data["loss"]), "loss")
    with pytest.raises(ValueError, match="fixed: 'gamma' is not a parameter of chinchilla"):
        scaling.fit(scaling.chinchilla, data, "loss", fixed={"gamma": 1.0})
    with pytest.raises(ValueError, match="starts: law farseer has no grid"):
        scaling.fit(scaling.farseer, data, "loss", starts="grid")


def test_every_named_law_evaluates_finite_inside_its_box():
    inputs = {"N": np.array([0.5, 2.0]), "D": np.array([5.0, 50.0]), "P": np.array([1.0, 4.0]),
              "n": np.array([300.0, 5000.0]), "pool": np.array([1000.0, 1000.0]), "C": np.array([1e3, 1e5]),
              "X": np.array([10.0, 100.0])}
    for law in scaling.LAWS.values():
        centre = law.start_points(1, seed=0)[0]
        out = law.predict(centre, **{k: inputs[k] for k in law.inputs})
        assert out.shape == (2,) and np.all(np.isfinite(out)), law.name


def test_fixed_fit_predicts_with_given_parameters_and_scores_them():
    data = chinchilla_points()
    held = scaling.fixed_fit(scaling.chinchilla, TRUE, data, "loss")
    assert held.r2 == pytest.approx(1.0, abs=1e-12) and held.loss == pytest.approx(0.0, abs=1e-20)
    np.testing.assert_allclose(held.predict(data), data["loss"], rtol=1e-12)
    off = scaling.fixed_fit(scaling.chinchilla, {**TRUE, "e": 0.6}, data, "loss")
    assert off.loss > 0 and off.r2 < 1
    assert np.isnan(scaling.fixed_fit(scaling.chinchilla, TRUE).r2)


def test_bootstrap_refits_with_the_loss_the_fit_used():
    data = chinchilla_points(noise=0.02, seed=4)
    fit = scaling.fit(scaling.chinchilla, data, "loss", starts=16, loss="mse")
    assert fit.kind == "mse"
    same = scaling.bootstrap(fit, data, "loss", n=4, seed=1)
    explicit = scaling.bootstrap(fit, data, "loss", n=4, seed=1, loss="mse")
    huber = scaling.bootstrap(fit, data, "loss", n=4, seed=1, loss="huber")
    pd.testing.assert_frame_equal(same.samples, explicit.samples)
    assert not np.allclose(same.samples["objective"], huber.samples["objective"])
