"""Paper 34 (RL post-training scaling): the published fits, our law fits, equal-X comparisons, the runs."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from paper34 import config, law, runs
from shared import reasoning, rl, zoo
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")


def test_published_fits_are_the_papers_numbers():
    fits = law.published_fits()
    assert list(zip(fits["models"], fits["X"])) == [("base", "C"), ("base", "D"), ("instruct", "C"), ("instruct", "D")]
    base_c = fits.iloc[0]
    assert base_c.k_max == pytest.approx(0.133, abs=5e-4) and base_c.N0 == pytest.approx(1.38e10, rel=0.01)
    assert base_c.n_points == 732 and base_c.r2 == pytest.approx(0.9955, abs=1e-4)
    assert base_c.E0[0] == pytest.approx(0.064, abs=1e-3) and base_c.E0[-1] == pytest.approx(1.896, abs=1e-3)
    assert all(len(e) == 7 for e in fits["E0"])


def test_published_checks_follow_the_closed_form():
    checks = law.published_checks(law.published_fits())
    for r in checks.itertuples():
        ratio = (72 / (72 + r.N0 / 1e9)) / (32 / (32 + r.N0 / 1e9))
        assert r.k_ratio_72_32 == pytest.approx(ratio) and r.k_ratio_72_32 < 2.25
        assert r.k72_over_kmax == pytest.approx(72e9 / (72e9 + r.N0))
        assert r.concave_share_above_n0 == 1 and r.concave_share_all < 1  # logistic in log N: convex below N0
    # the instruct/data fit's E0 is ~0 below 7B and not monotone; the base/compute one rises
    assert checks["E0_monotone"].tolist() == [True, True, True, False]


def test_concave_share_of_a_logistic_in_log_n():
    n0 = 1e9
    n = n0 * np.exp(np.linspace(-4, 4, 9))
    k = law.k_of_n(1.0, n0, n)
    assert law.concave_share(n, k) == pytest.approx(3 / 7)  # interior points above N0 (not at it): concave
    assert law.concave_share(n[4:], k[4:]) == 1.0 and law.concave_share(n[:5], k[:5]) == 0.0
    assert math.isnan(law.concave_share(n[:2], k[:2]))


def test_loglinear_fit_recovers_a_power_law():
    x = np.geomspace(1e9, 1e12, 8)
    fit = law.loglinear_fit(x, -0.12 * np.log(x) + 2.5)
    assert fit["k"] == pytest.approx(0.12) and fit["E0"] == pytest.approx(2.5) and fit["r2"] == pytest.approx(1.0)
    assert law.loglinear_fit(x, np.full(8, -0.5))["r2"] == 0.0  # ErrRate never moved
    with pytest.raises(ValueError, match="x: needs >= 2"):
        law.loglinear_fit([1e9], [0.1])


def test_k_of_n_fits_prefer_the_form_that_generated_the_data():
    n = np.geomspace(1e4, 1e7, 6)
    sat = law.k_of_n_fits(n, law.k_of_n(0.2, 3e5, n))
    assert sat["k_max"] == pytest.approx(0.2, rel=1e-3) and sat["N0"] == pytest.approx(3e5, rel=1e-2)
    assert sat["sat_wins"] and sat["n0_in_range"]
    loglin = law.k_of_n_fits(n, 0.01 + 0.02 * np.log(n))
    assert not loglin["sat_wins"] and loglin["b_log"] == pytest.approx(0.02)
    assert law.aic(1.0, 10, 2) == pytest.approx(10 * math.log(0.1) + 4)


def _table(errs: dict[str, list[float]], n: dict[str, int], flops_per_step: dict[str, float]) -> pd.DataFrame:
    rows = []
    for size, e in errs.items():
        for step, err in enumerate(e):
            rows.append(dict(size=size, N=n[size], step=step, C=step * flops_per_step[size], D=step * 64.0, err=err))
    return pd.DataFrame(rows)


def test_equal_x_share_counts_wins_of_the_larger_size():
    n = {"s": 1, "m": 2}
    better = _table({"s": [0.9, 0.8, 0.7, 0.6, 0.5], "m": [0.9, 0.5, 0.4, 0.3, 0.2]}, n, {"s": 1.0, "m": 2.0})
    share, count = law.equal_x_share(better, "C")
    assert share == 1.0 and count > 0
    worse = _table({"s": [0.9, 0.5, 0.4, 0.3, 0.2], "m": [0.9, 0.8, 0.7, 0.6, 0.5]}, n, {"s": 1.0, "m": 2.0})
    assert law.equal_x_share(worse, "C")[0] == 0.0
    assert law.equal_x_share(better, "D") == (1.0, 8)  # same checkpoints: 4 each way
    apart = _table({"s": [0.9, 0.8, 0.7], "m": [0.9, 0.5, 0.4]}, n, {"s": 1.0, "m": 10.0})
    share, count = law.equal_x_share(apart, "C")
    assert count == 0 and math.isnan(share)


def test_size_metrics_worked_by_hand():
    # s (N = 1) starts worse and falls more; m (N = 2) starts better and falls less; same C and D per step
    table = _table({"s": [0.5, 0.45, 0.40], "m": [0.4, 0.38, 0.36]}, {"s": 1, "m": 2}, {"s": 1.0, "m": 1.0})
    table["log_err"] = np.log(table["err"])
    fits = {"C": law.loglinear_fits(table, "C")}
    kfits = {"C": {"k_max": 0.2, "N0": 1.5, "sat_wins": True, "n0_in_range": True}}
    m = law.size_metrics(table, fits, kfits, ["s", "m"])
    assert m["ours_err_start_s"] == 0.5 and m["ours_err_end_m"] == 0.36
    assert m["ours_err_drop_s"] == 0.1 and m["ours_err_drop_m"] == 0.04 and m["ours_min_err_drop"] == 0.04
    # two points per size: k = -ln(err(2) / err(1)) / ln 2, R^2 = 1
    assert m["ours_k_C_s"] == round(math.log(0.45 / 0.40) / math.log(2), 5) == 0.16993
    assert m["ours_k_C_m"] == round(math.log(0.38 / 0.36) / math.log(2), 5) == 0.078
    assert m["ours_fit_r2_C_median"] == 1.0 and m["ours_k_C_monotone"] == 0  # k falls with N here
    assert m["ours_kn_C_k_max"] == 0.2 and m["ours_kn_C_sat_wins"] == 1 and m["ours_saturating_wins_C"] == 1
    # equal C = equal D here: 2 checkpoints of each size inside the other's range; m is lower at every one
    # (0.38 < 0.45, 0.36 < 0.40) but has dropped less since step 0 (-0.02 vs -0.05, -0.04 vs -0.10)
    for x in ("compute", "data"):
        assert m[f"ours_equal_{x}_comparisons"] == 4 and m[f"ours_equal_{x}_share"] == 1.0
        assert m[f"ours_equal_{x}_drop_comparisons"] == 4 and m[f"ours_equal_{x}_drop_share"] == 0.0
    np.testing.assert_allclose(law.drop_table(table)["err"], [0, -0.05, -0.1, 0, -0.02, -0.04], atol=1e-12)
    far = _table({"s": [0.5, 0.4], "m": [0.4, 0.35]}, {"s": 1, "m": 2}, {"s": 1.0, "m": 10.0})
    far["log_err"] = np.log(far["err"])
    m = law.size_metrics(far, {}, {}, ["s", "m"])  # no overlap in C: the shares are None (not run), not 0 or nan
    assert m["ours_equal_compute_comparisons"] == 0 and m["ours_equal_compute_share"] is None
    assert m["ours_equal_compute_drop_share"] is None and m["ours_equal_data_drop_share"] == 0.0


def test_reuse_metrics_worked_by_hand():
    rows = [(1.0, 0, 8, 0, 0.5), (1.0, 0, 8, 2, 0.4), (1.0, 1, 8, 0, 0.5), (1.0, 1, 8, 2, 0.2),
            (4.0, 0, 2, 0, 0.5), (4.0, 0, 2, 2, 0.33), (4.0, 1, 2, 0, 0.5), (4.0, 1, 2, 2, 0.33)]
    curves = pd.DataFrame(rows, columns=["tau", "seed", "pool", "step", "err"])
    m = law.reuse_metrics(curves, 4)
    assert m["reuse_err_tau1"] == 0.3 and m["reuse_err_tau4"] == 0.33  # final step, mean over the 2 seeds
    assert m["reuse_rel_diff_tau1"] == 0.0 and m["reuse_rel_diff_tau4"] == 0.1  # (0.33 - 0.3) / 0.3
    assert m["reuse_pool_tau1"] == 8 and m["reuse_pool_tau4"] == 2
    assert m["reuse_err_before"] == 0.5 and m["reuse_err_drop_tau1"] == 0.2
    assert m["reuse_abs_rel_diff_claim_tau"] == 0.1 and m["reuse_claim_tau"] == 4


def test_reuse_summary_relative_to_unique_data():
    final = pd.DataFrame(dict(tau=[1.0, 1.0, 4.0, 4.0], seed=[0, 1, 0, 1], err=[0.4, 0.6, 0.55, 0.55]))
    out = law.reuse_summary(final).set_index("tau")
    assert out.loc[1.0, "err"] == pytest.approx(0.5) and out.loc[4.0, "rel_diff"] == pytest.approx(0.1)
    assert out.loc[1.0, "seeds"] == 2


def test_configs_compose_and_bad_values_fail_naming_the_key():
    base = OmegaConf.create(yaml.safe_load((CONF / "p34" / "base.yaml").read_text()))
    assert set(base.keys()) == set(config.Params.model_fields)
    for scale in ("smoke", "cpu", "gpu"):
        over = yaml.safe_load((CONF / "p34" / f"{scale}.yaml").read_text())
        over.pop("defaults")
        params = config.Params(**OmegaConf.to_container(OmegaConf.merge(base, over)))
        assert params.rl.algorithm == "grpo" and params.rl.lr <= 1e-3 and params.claim_tau in params.reuse_taus
    raw = OmegaConf.to_container(base)
    for key, value, match in (("claim_tau", 8, "claim_tau"), ("reuse_taus", [4, 16], "reuse_taus"),
                              ("train_difficulty", [3, 1], "train_difficulty"), ("eval_difficulty", 0, "eval_difficulty"), ("sizes", ["small"], "sizes")):
        with pytest.raises(ValueError, match=match):
            config.Params(**{**raw, key: value})


def _tiny_policy(d_model: int, seed: int):
    spec = zoo.ModelSpec(attention="gqa", vocab_size=reasoning.VOCAB_SIZE, d_model=d_model, n_layers=1, n_heads=4,
                         n_kv_heads=2, d_ff=2 * d_model, max_seq_len=64)
    return reasoning.as_policy(zoo.build(spec, seed=seed), spec, name=f"d{d_model}")


CFG = rl.RLConfig(algorithm="grpo", loss_aggregation="sequence", advantage_norm="group", zero_variance_filter=False,
                  group_size=2, prompts_per_step=2, steps=4, lr=1e-3, eval_every=2, eval_problems=4, eval_samples=2,
                  max_new_tokens=8)
QUIET = lambda it, **kw: it  # noqa: E731


def test_size_sweep_and_reuse_sweep_on_tiny_policies():
    policies = {"a": _tiny_policy(16, 0), "b": _tiny_policy(32, 1)}
    problems = reasoning.generate(16, 2, seed=0, modulus=7)
    evals = reasoning.generate(4, 2, seed=1, modulus=7)
    table, history = runs.size_sweep(policies, ["a", "b"], CFG, problems, evals, seed=0, err_floor=1e-3, progress=QUIET)
    assert table.groupby("size")["step"].apply(list).to_dict() == {"a": [0, 2, 4], "b": [0, 2, 4]}
    assert (table.groupby("size")["N"].first() == pd.Series({"a": policies["a"].params, "b": policies["b"].params})).all()
    c = table.pivot(index="step", columns="size", values="C")
    assert (c.loc[4] > c.loc[2]).all() and (c["b"] > c["a"]).iloc[1:].all()  # cumulative, larger costs more
    assert len(history) == 2 * (CFG.steps + 1) and table["err"].between(0, 1).all()
    sampled = history[history["eval_sampled"].notna()].set_index(["size", "step"])["eval_sampled"]
    assert np.allclose(1 - sampled.to_numpy(), table.set_index(["size", "step"])["err"].loc[sampled.index].to_numpy())
    with pytest.raises(ValueError, match="sizes: \\['huge'\\]"):
        runs.size_sweep(policies, ["a", "huge"], CFG, problems, evals, seed=0, err_floor=1e-3, progress=QUIET)
    curves = runs.reuse_sweep(policies["a"], CFG, [1, 4], [0], problems, evals, progress=QUIET)
    last = curves[curves["step"] == CFG.steps].set_index("tau")
    assert last.loc[1.0, "pool"] == 8 and last.loc[4.0, "pool"] == 2  # steps x prompts / tau (at least one step's)
    assert last.loc[4.0, "unique_prompts"] <= 2 < last.loc[1.0, "unique_prompts"]
