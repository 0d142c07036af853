"""Paper 10 (ScaleRL): the sigmoid law and its fits, the power-law baseline, params, the runs table."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from paper10 import config, law, runs
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")

TRUTH = {"A": 0.62, "B": 1.6, "C_mid": 3e12}
R0 = 0.2


def _curve(n=40, c_max=2e13, noise=0.0, seed=0):
    c = np.linspace(c_max / n, c_max, n)
    r = law.sigmoid(c, TRUTH["A"], TRUTH["B"], TRUTH["C_mid"], R0)
    return c, r + np.random.default_rng(seed).normal(0, noise, n)


def test_sigmoid_shape():
    a, b, mid = TRUTH.values()
    assert law.sigmoid(0.0, a, b, mid, R0) == pytest.approx(R0)
    assert law.sigmoid(mid, a, b, mid, R0) == pytest.approx(R0 + (a - R0) / 2)  # C_mid: half of the gain
    assert law.sigmoid(1e9 * mid, a, b, mid, R0) == pytest.approx(a, abs=1e-9)  # the asymptote
    r = law.sigmoid(np.geomspace(mid / 100, mid * 100, 50), a, b, mid, R0)
    assert (np.diff(r) > 0).all()
    # B is the slope in log compute at the midpoint: d R / d ln C = (A - R0) B / 4
    eps = 1e-4
    slope = (law.sigmoid(mid * math.exp(eps), a, b, mid, R0) - law.sigmoid(mid * math.exp(-eps), a, b, mid, R0)) / (2 * eps)
    assert slope == pytest.approx((a - R0) * b / 4, rel=1e-6)


def test_fit_sigmoid_recovers_the_parameters():
    c, r = _curve()
    fit = law.fit_sigmoid(c, r, R0, starts=9)
    assert fit.values["A"] == pytest.approx(TRUTH["A"], abs=1e-4)
    assert fit.values["B"] == pytest.approx(TRUTH["B"], rel=1e-3)
    assert fit.values["C_mid"] == pytest.approx(TRUTH["C_mid"], rel=1e-3)
    assert fit.rmse < 1e-6 and fit.points == len(c)
    np.testing.assert_allclose(fit.predict(c), r, atol=1e-6)


def test_fit_power_recovers_the_parameters():
    c = np.linspace(1e11, 1e13, 30)
    r = law.power(c, 3e-6, 0.4, R0)
    fit = law.fit_power(c, r, R0, starts=8)
    assert fit.values["b"] == pytest.approx(0.4, rel=1e-3) and fit.values["a"] == pytest.approx(3e-6, rel=1e-2)
    np.testing.assert_allclose(fit.predict(c), r, atol=1e-6)


def test_half_compute_sigmoid_extrapolates_a_sigmoid_the_power_law_does_not():
    c, r = _curve(noise=0.003)
    out = law.extrapolation(c, r, R0, fit_start=0.1, fit_end=0.5, final_window=0.9, starts=9)
    assert out["fit_points"] == 17 and out["final_points"] == 5  # c = k x 0.5e12: k = 4..20 and 36..40
    truth = float(np.mean(law.sigmoid(c[law.window(c, 0.9, 1.0)], *TRUTH.values(), R0)))
    assert abs(out["sigmoid_pred"] - truth) < 0.02
    assert out["sigmoid_error"] < 0.02 < out["power_error"]  # the power law never saturates


def test_window():
    c = np.array([0.0, 1.0, 2.0, 5.0, 9.0, 10.0])
    assert law.window(c, 0.1, 0.5).tolist() == [False, True, True, True, False, False]
    assert law.window(c, 0.9, 1.0).tolist() == [False, False, False, False, True, True]


def test_fit_errors_are_one_line():
    with pytest.raises(ValueError, match="at least 3 points, got 2"):
        law.fit_sigmoid([1.0, 2.0], [0.1, 0.2], 0.0)
    with pytest.raises(ValueError, match=r"compute: every point must be > 0"):
        law.fit_power([0.0, 1.0, 2.0], [0.1, 0.2, 0.3], 0.1)
    with pytest.raises(ValueError, match="one length"):
        law.fit_sigmoid([1.0, 2.0, 3.0], [0.1, 0.2], 0.0)


def test_fit_power_skips_a_start_that_does_not_converge(monkeypatch):
    import scipy.optimize

    real, calls = scipy.optimize.curve_fit, []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) % 2:
            raise RuntimeError("Optimal parameters not found")
        return real(*args, **kw)

    monkeypatch.setattr(scipy.optimize, "curve_fit", flaky)
    c = np.linspace(1e11, 1e13, 30)
    fit = law.fit_power(c, law.power(c, 3e-6, 0.4, R0), R0, starts=4)
    assert len(calls) == 4 and fit.values["b"] == pytest.approx(0.4, rel=1e-3)
    monkeypatch.setattr(scipy.optimize, "curve_fit", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no")))
    with pytest.raises(RuntimeError, match="^fit_power: none of the 4 starts converged$"):
        law.fit_power(c, law.power(c, 3e-6, 0.4, R0), R0, starts=4)


def _merge(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _scale(name):
    base = yaml.safe_load((CONF / "p10" / "base.yaml").read_text())
    over = yaml.safe_load((CONF / "p10" / f"{name}.yaml").read_text())
    over.pop("defaults")
    return _merge(base, over)


def test_params_every_scale_validates_and_errors_name_the_key():
    base = yaml.safe_load((CONF / "p10" / "base.yaml").read_text())
    assert set(base) == set(config.Params.model_fields)
    for scale in ("smoke", "cpu", "gpu"):
        p = config.Params(**_scale(scale))
        assert {p.recipe(n).steps for n in p.recipes} == {p.rl["steps"]}
    p = config.Params(**base)
    assert p.recipe("scalerl").algorithm == "cispo" and p.recipe("scalerl").loss_aggregation == "prompt"
    assert p.recipe("dapo").algorithm == "dapo" and p.recipe("dapo").advantage_norm == "group"
    assert {p.recipe(n).lag for n in p.recipes} == {8}  # PipelineRL-8 everywhere
    with pytest.raises(ValueError, match=r"recipes\.dapo\.algorithm"):
        config.Params(**_merge(base, {"recipes": {"dapo": {"algorithm": "ppo"}}}))
    with pytest.raises(ValueError, match=r"recipes\.dapo\.lr"):
        config.Params(**_merge(base, {"rl": {"lr": -1.0}}))
    with pytest.raises(ValueError, match="baseline: 'grpo' is not one of recipes"):
        config.Params(**{**base, "baseline": "grpo"})
    with pytest.raises(ValueError, match="fit_start: must be below fit_end"):
        config.Params(**{**base, "fit_start": 0.6})
    with pytest.raises(ValueError, match="difficulty"):
        config.Params(**{**base, "difficulty": [3, 2]})


def test_claim_metrics_compare_the_right_recipes():
    p = config.Params(**yaml.safe_load((CONF / "p10" / "base.yaml").read_text()))
    rows = [("dapo", 0, 0.40, 1.0, 0.01, 0.05), ("cispo_details", 0, 0.45, 1.5, 0.02, 0.04),
            ("scalerl", 0, 0.47, 2.0, 0.03, 0.02), ("scalerl", 1, 0.50, 2.2, 0.0, 0.0)]
    fits = pd.DataFrame([{"recipe": n, "seed": s, "R0": 0.2, "A": a, "B": b, "C_mid": 1e12, "C_final": 3e12,
                          "observed_final": a - 0.05, "sigmoid_error": se, "power_error": pe} for n, s, a, b, se, pe in rows])
    m = runs.claim_metrics(fits, p)
    assert m["scalerl_identifiable"] == 1 and m["scalerl_final_over_mid"] == 3.0 and m["scalerl_seeds_identifiable"] == 2
    assert m["a_details_minus_baseline"] == 0.05 and m["a_scalerl_minus_baseline"] == 0.07
    assert m["details_abs_a_shift"] == 0.02 and m["a_seed_spread"] == 0.03
    assert m["details_rel_b_minus_rel_a"] == round(0.5 / 1.75 - 0.02 / 0.46, 4)
    assert m["extrap_error_sigmoid_max"] == 0.03 and m["sigmoid_minus_power_error"] == round((-0.04 - 0.02 + 0.01) / 3, 4)
    assert m["scalerl_gain"] == 0.22 and "a_seed_spread" not in runs.claim_metrics(fits[fits["seed"] == 0], p)


def test_comparisons_of_unidentified_fits_are_not_reported():
    p = config.Params(**yaml.safe_load((CONF / "p10" / "base.yaml").read_text()))
    good = {"R0": 0.2, "A": 0.5, "B": 1.5, "C_mid": 1e12, "C_final": 4e12, "observed_final": 0.45, "sigmoid_error": 0.01,
            "power_error": 0.02}
    keys = ("a_details_minus_baseline", "a_scalerl_minus_baseline", "details_abs_a_shift", "details_rel_b_minus_rel_a",
            "a_seed_spread")

    def metrics(**bad):  # recipe -> overrides of its main-seed fit
        rows = [{"recipe": n, "seed": s, **good, **(bad.get(n, {}) if s == 0 else bad.get(f"{n}_1", {}))}
                for n, s in (("dapo", 0), ("cispo_details", 0), ("scalerl", 0), ("scalerl", 1))]
        return runs.claim_metrics(pd.DataFrame(rows), p)

    assert all(metrics()[k] is not None for k in keys)
    m = metrics(dapo={"A": 0.9995})  # the baseline's A on the bound A <= 1: both comparisons with it go
    assert m["dapo_a_at_bound"] == 1 and m["dapo_identifiable"] == 0
    assert m["a_details_minus_baseline"] is None and m["a_scalerl_minus_baseline"] is None
    assert m["details_abs_a_shift"] == 0.0 and m["a_seed_spread"] == 0.0
    m = metrics(cispo_details={"B": law.B_MAX})  # B on its upper bound
    assert m["cispo_details_b_at_bound"] == 1 and m["a_details_minus_baseline"] is None
    assert m["details_abs_a_shift"] is None and m["details_rel_b_minus_rel_a"] is None
    assert m["a_scalerl_minus_baseline"] == 0.0
    assert metrics(cispo_details={"B": law.B_MIN})["cispo_details_b_at_bound"] == 1
    m = metrics(scalerl={"C_final": 2.9e12})  # the run ends at 2.9 x C_mid (< 3): not identified
    assert m["scalerl_final_over_mid"] == 2.9 and m["scalerl_identifiable"] == 0 and m["scalerl_b_at_bound"] == 0
    assert m["a_scalerl_minus_baseline"] is None and m["details_abs_a_shift"] is None and m["a_seed_spread"] is None
    assert m["a_details_minus_baseline"] == 0.0 and m["scalerl_seeds_identifiable"] == 1
    m = metrics(scalerl_1={"A": 1.0})  # only the spread seed on the bound: only the spread goes
    assert m["a_seed_spread"] is None and m["a_scalerl_minus_baseline"] == 0.0


def test_runs_table_on_a_tiny_policy():
    from shared import reasoning, zoo

    spec = zoo.ModelSpec(attention="gqa", vocab_size=reasoning.VOCAB_SIZE, d_model=32, n_layers=1, n_heads=4,
                         n_kv_heads=2, d_ff=64, max_seq_len=64)
    policy = reasoning.as_policy(zoo.build(spec, seed=0), spec)
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    p = config.Params(**_merge(_scale("smoke"), {"rl": {"steps": 2, "eval_every": 1, "eval_problems": 4,
                                                        "prompts_per_step": 2, "group_size": 2, "eval_samples": 1}}))
    task = reasoning.TaskParams(modulus=7, ops="+-*", train_difficulty=[1, 2], eval_difficulty=2)
    pool, held_out = runs.problems(task, p)
    assert len(pool) == 4 and len(held_out) == 4 and {q.difficulty for q in pool} == {2}
    assert runs.plan(p) == [("dapo", 0), ("cispo_details", 0), ("scalerl", 0), ("scalerl", 1)]
    table = runs.run_all(policy, p, pool, held_out)
    assert list(table.columns) == runs.COLUMNS and len(table) == 4 * 3  # steps 0, 1, 2 of 4 runs
    first = table[table["step"] == 0]
    assert first["flops"].eq(0).all() and first["eval_sampled"].nunique() == 1  # one policy before RL
    assert table.groupby(["recipe", "seed"])["flops"].apply(lambda f: f.is_monotonic_increasing).all()
    assert all((policy.model.state_dict()[k] == v).all() for k, v in before.items())  # RL trains a copy
    m = runs.run_metrics(table, p)
    assert m["r0"] == round(float(first["eval_sampled"].iloc[0]), 4)
    assert m["dapo_total_gflops"] == round(table.loc[table["recipe"] == "dapo", "flops"].max() / 1e9, 3)
    for name in p.recipes:  # None only when every group of the run was filtered out (no update)
        assert m[f"{name}_ratio_mean"] is None or m[f"{name}_ratio_mean"] > 0
        assert m[f"{name}_clip_frac"] is None or 0 <= m[f"{name}_clip_frac"] <= 1
