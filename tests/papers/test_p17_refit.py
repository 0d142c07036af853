"""Paper 17 (Farseer): data, splits, the differential piecewise fit, both laws, compute-optimal D/N."""

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from paper17 import config, piecewise, refit
from shared import scaling
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")

# A Farseer surface with the shape of the published fit (inputs in billions).
TRUE = {"s": -1.0, "q": 0.12, "S": 0.2, "B": 1.5, "b": 0.09, "Q": -3.0, "A": -2.2, "a": 0.08, "E": 0.95}
SIZES = np.array([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
TOKENS = np.array([2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])


def _grid(params=TRUE, law=scaling.farseer, noise=0.0, seed=0):
    n, d = (a.ravel() for a in np.meshgrid(SIZES, TOKENS, indexing="ij"))
    loss = law.predict(params, N=n, D=d) * (1 + noise * np.random.default_rng(seed).standard_normal(n.size))
    return pd.DataFrame({"N": n, "D": d, "loss": loss, "N_raw": n * 1e9, "D_raw": d * 1e9})


# ----------------------------------------------------------------------- the published data


def test_published_grid_is_the_documented_copy():
    raw = refit.DATA.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    assert digest in (refit.DATA.parent / "SOURCE.md").read_text()
    data = refit.load_published()
    assert len(data) == 404 and data["N_raw"].nunique() == 25
    assert data["N"].max() == pytest.approx(6.369572, rel=1e-6)  # billions
    assert data["N_raw"].min() == pytest.approx(9.962035e7, rel=1e-6)


def test_split_holds_out_the_largest_sizes():
    data = refit.load_published()
    train, test = refit.split_by_size(data, holdout_sizes=3)
    assert test["N_raw"].nunique() == 3 and train["N_raw"].max() < test["N_raw"].min()
    assert len(train) + len(test) == len(data)
    train, test = refit.split_by_size(data, max_n=5.36e9)
    assert test["N_raw"].unique().tolist() == [data["N_raw"].max()]
    with pytest.raises(ValueError, match="holdout_sizes"):
        refit.split_by_size(data, holdout_sizes=24)


def test_from_runs_takes_the_lmgrid_columns():
    runs = pd.DataFrame({"nonembedding_params": [2e4, 4e4], "params": [1e5, 2e5], "tokens": [1e6, 2e6],
                         "val_loss": [3.0, 2.5]})
    grid = refit.from_runs(runs, "nonembedding_params", unit=1e6)
    assert grid["N"].tolist() == [0.02, 0.04] and grid["D"].tolist() == [1.0, 2.0]
    assert grid["N_raw"].tolist() == [2e4, 4e4] and grid["loss"].tolist() == [3.0, 2.5]
    with pytest.raises(ValueError, match="missing columns"):
        refit.from_runs(runs.drop(columns="tokens"), "params", unit=1e6)


# ----------------------------------------------------------------------- piecewise (the paper's method)


def test_stretched_recovers_a_power_law_with_offset():
    n = np.geomspace(0.1, 10, 12)
    c, p, c0 = piecewise.stretched(n, 0.7 * n**-0.3 - 1.2)
    assert (c, p, c0) == pytest.approx((0.7, -0.3, -1.2), rel=1e-4)


def test_difference_pairs_follow_the_ratio():
    d = np.array([1.0, 1.19, 1.41, 2.0, 2.83, 4.0])
    pairs = piecewise.difference_pairs(d, ratio=2.0)
    assert all(abs(math.log(d[j] / d[i]) - math.log(2.0)) < 0.15 for i, j in pairs)
    assert (0, 3) in pairs and (3, 5) in pairs
    assert piecewise.difference_pairs(np.array([1.0, 10.0, 100.0]), ratio=2.0) == [(0, 1), (1, 2)]  # fallback


def test_piecewise_recovers_a_noise_free_farseer_surface():
    grid = _grid()
    per_n = piecewise.per_size_exponents(grid, ratio=2.0)
    true_a = np.exp(TRUE["A"] * per_n["N"] ** TRUE["a"] + TRUE["E"])
    true_b = np.exp(TRUE["B"] * per_n["N"] ** TRUE["b"] + TRUE["Q"])
    assert per_n["A_N"].to_numpy() == pytest.approx(true_a, rel=1e-5)  # U(N) cancels in the differences
    assert per_n["B_N"].to_numpy() == pytest.approx(true_b, rel=1e-4)
    params = piecewise.fit(grid)
    pred = scaling.farseer.predict(params, N=grid["N"], D=grid["D"])
    assert scaling.prediction_errors(pred, grid["loss"].to_numpy())["max_re"] < 1e-3


# ----------------------------------------------------------------------- both laws, extrapolation


def test_fit_laws_extrapolate_a_farseer_surface_and_chinchilla_does_worse():
    grid = _grid(noise=1e-4)
    train, test = refit.split_by_size(grid, holdout_sizes=1)
    fits = refit.fit_laws(train, farseer_starts=0, chinchilla_starts=8, seed=0)
    held = refit.fit_errors(fits, test)
    assert held["farseer"]["mre"] < 2e-3
    assert held["chinchilla"]["mre"] > 2 * held["farseer"]["mre"]  # no cross term: it cannot follow A(N), B(N)
    # the robust fit's objective is the Huber sum the module recomputes
    pred = fits["farseer"].predict(train).ravel()
    assert scaling.huber_objective(pred, train["loss"].to_numpy()) == pytest.approx(fits["farseer"].loss, rel=1e-6)
    table = refit.predictions_table(fits, test, "held out")
    assert set(table["split"]) == {"held out"} and table["re_farseer"].abs().mean() == pytest.approx(held["farseer"]["mre"])


def test_compute_optimal_matches_chinchillas_closed_form():
    # L = E + A/N^alpha + B/D^beta with N, D in billions: N_opt = G (C/6)^(beta/(alpha+beta)) in raw units
    a, b, e, alpha, beta = math.log(0.09), math.log(0.2), math.log(0.37), 0.28, 0.31
    fitted = refit._params_fit({"a": a, "b": b, "e": e, "alpha": alpha, "beta": beta}, scaling.chinchilla)
    budgets = [1e20, 1e22, 1e24]
    curve = refit.optimal_ratio(fitted, budgets, unit=1e9)
    A, B = math.exp(a), math.exp(b)
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    for c, n in zip(budgets, curve["N"]):
        n_opt = 1e9 * g * (c / 6 / 1e18) ** (beta / (alpha + beta))  # in billions: (C/6)/1e18 = N D in 1e9 units
        assert n == pytest.approx(n_opt, rel=1e-4)
    assert refit.ratio_at(curve, 1e22) == pytest.approx(curve["D_over_N"].iloc[1])
    assert curve["D_over_N"].is_monotonic_decreasing  # alpha < beta: D/N falls with C
    with pytest.raises(ValueError, match="budget"):
        refit.ratio_at(curve, 3e21)


def test_compute_optimal_of_a_farseer_law_is_a_minimum_on_the_budget():
    # no closed form for Farseer: the returned split must spend the budget (6ND = C) and beat
    # its neighbours N x 2 and N / 2 at the same C; a fixed_fit and a bare params dict agree
    budgets = [1e19, 1e21, 1e23]
    fitted = scaling.fixed_fit(scaling.farseer, TRUE)
    curve = refit.optimal_ratio(fitted, budgets, unit=1e9)
    pd.testing.assert_frame_equal(curve, refit.optimal_ratio(dict(TRUE), budgets, unit=1e9))
    assert not curve["at_grid_edge"].any()
    np.testing.assert_allclose(6 * curve["N"] * curve["D"], budgets, rtol=1e-9)
    np.testing.assert_allclose(curve["D_over_N"], curve["D"] / curve["N"], rtol=1e-12)

    def loss(n, c):  # raw N, same budget c; the law takes billions
        return scaling.farseer.predict(TRUE, N=np.asarray(n) / 1e9, D=c / (6 * np.asarray(n)) / 1e9)

    for c, n, best in zip(budgets, curve["N"], curve["loss"]):
        assert best == pytest.approx(float(loss(n, c)), rel=1e-9)
        assert best < float(loss(2 * n, c)) and best < float(loss(n / 2, c))


def test_grid_budgets_span_the_grid():
    grid = _grid()
    budgets = refit.grid_budgets(grid, (0.0, 2.0), 5)
    flops = 6 * grid["N_raw"] * grid["D_raw"]
    assert budgets[0] == pytest.approx(flops.min()) and budgets[-1] == pytest.approx(100 * flops.max())


# ----------------------------------------------------------------------- parameters


def _base():
    return yaml.safe_load((CONF / "p17" / "base.yaml").read_text())


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_every_scale_validates(scale):
    values = _base() | {k: v for k, v in yaml.safe_load((CONF / "p17" / f"{scale}.yaml").read_text()).items()
                        if k != "defaults"}
    params = config.Params(**values)
    assert 1e20 in params.dn_budgets and any(math.isclose(b, 1e24) for b in params.budgets)


def test_bad_values_fail_naming_the_key():
    with pytest.raises(ValidationError, match="dn_budgets"):
        config.Params(**(_base() | {"dn_budgets": [1e20, 2e24]}))
    with pytest.raises(ValidationError, match="chinchilla_starts"):
        config.Params(**(_base() | {"chinchilla_starts": "grids"}))
    with pytest.raises(ValidationError, match="chinchilla_starts"):
        config.Params(**(_base() | {"chinchilla_starts": 0}))  # a count must be >= 1
    with pytest.raises(ValidationError, match="farseer_start"):
        config.Params(**(_base() | {"farseer_start": 3}))
