"""Paper 20 (Scaling over Scaling / TTSPM): the model, its saturation points, estimation, the experiments."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from paper20 import config, experiment, ttspm
from shared import reasoning, zoo
from shared.paths import CONF

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_saturation(first, p, eps):
    n = 1
    while (1 - first) * p * (1 - p) ** (n - 1) > eps:
        n += 1
    return n


@pytest.mark.parametrize("eps", [0.001, 0.01, 0.05])
def test_saturation_point_is_the_first_budget_whose_next_unit_gains_at_most_eps(eps):
    for first in (0.0, 0.1, 0.37, 0.8):
        for p in (0.0, 0.003, 0.01, 0.05, 0.2, 0.5, 0.9, 0.999, 1.0):
            assert ttspm.saturation_point(first, p, eps) == brute_saturation(first, p, eps), (first, p, eps)
    # parallel (first = p): the closed form ceil(ln(eps / p) / ln(1 - p)) wherever it is not an integer
    for p in (0.02, 0.05, 0.1, 0.3):
        assert ttspm.saturation_point(p, p, eps) == max(1, math.ceil(math.log(eps / p) / math.log(1 - p)))
    # an exact boundary: p = 0.5, eps = 0.5^4, gain(N) = 0.5^(N+1) <= 0.5^4 first at N = 3
    assert ttspm.saturation_point(0.5, 0.5, 0.5 ** 4) == 3
    with pytest.raises(ValueError, match=r"eps: must be in \(0, 1\), got 0"):
        ttspm.saturation_point(0.1, 0.1, 0)
    with pytest.raises(ValueError, match="first, p: probabilities"):
        ttspm.saturation_point(0.1, 1.5, 0.01)


def test_one_form_for_both_paradigms():
    ns = np.arange(1, 40)
    p = 0.13
    # sequential with p0 = p_rethink is parallel scaling, curve and saturation point alike
    assert np.allclose(ttspm.upper_bound(p, p, ns), 1 - (1 - p) ** ns)
    assert np.allclose(ttspm.hit_at_n(p, ns), ttspm.upper_bound(p, p, ns))
    # the marginal gain is the curve's difference, for any first term
    for first in (0.0, 0.3, p):
        f = ttspm.upper_bound(first, p, np.arange(1, 41))
        assert np.allclose(np.diff(f), ttspm.marginal_gain(first, p, ns))
    assert ttspm.hit_at_n(0.2, 0) == 0.0  # no sample, no hit


def test_pass_at_k_is_the_exact_unbiased_estimator():
    n = 16
    for c in range(n + 1):
        got = ttspm.pass_at_k(n, c, range(1, n + 1))
        want = [1 - math.comb(n - c, k) / math.comb(n, k) for k in range(1, n + 1)]
        assert np.allclose(got, want), c
    assert ttspm.pass_at_k(8, 0, [8])[0] == 0 and ttspm.pass_at_k(8, 8, [1])[0] == 1
    with pytest.raises(ValueError, match=r"c: must be in \[0, n=4\], got 5"):
        ttspm.pass_at_k(4, 5, [1])
    with pytest.raises(ValueError, match=r"ks: must be in \[1, n=4\]"):
        ttspm.pass_at_k(4, 1, [5])


def test_observed_saturation():
    curve = np.array([0.2, 0.35, 0.45, 0.5, 0.52, 0.53])
    assert ttspm.observed_saturation(curve, 0.05) == 3  # Hit@4 - Hit@3 = 0.05
    assert ttspm.observed_saturation(curve, 0.001) == 6  # censored at the budget
    # on an exact parallel curve it is the predicted saturation point
    p, eps = 0.07, 0.01
    exact = ttspm.hit_at_n(p, np.arange(1, 65))
    assert ttspm.observed_saturation(exact, eps) == ttspm.saturation_point(p, p, eps)


def test_heterogeneity_and_empirical_bayes_on_simulated_problems():
    rng = np.random.default_rng(0)
    p = rng.beta(0.6, 3.0, size=3000)  # many hard problems, a few easy ones
    pilot, fresh = rng.random((3000, 8)) < p[:, None], rng.random((3000, 64)) < p[:, None]
    ns = np.arange(1, 65)
    observed = ttspm.observed_curves(fresh, ns).mean(0)
    # with the true p, the mean of per-problem curves is the aggregate; one curve at the mean p is
    # above it (Jensen: 1 - (1 - p)^N is concave in p)
    truth = ttspm.hit_at_n(p[:, None], ns[None, :]).mean(0)
    assert ttspm.mae(truth, observed) < 0.005 < 0.1 < ttspm.mae(ttspm.hit_at_n(p.mean(), ns), observed)
    p_hat = pilot.mean(1)
    mean_of_curves = ttspm.hit_at_n(p_hat[:, None], ns[None, :]).mean(0)
    curve_of_mean = ttspm.hit_at_n(p_hat.mean(), ns)
    assert np.all(curve_of_mean >= mean_of_curves - 1e-12)
    a, b = ttspm.fit_beta_binomial(pilot.sum(1), 8)
    assert abs(a - 0.6) < 0.15 and abs(b - 3.0) < 0.8
    eb = ttspm.posterior_hit(pilot.sum(1), 8, a, b, ns).mean(0)
    # the plug-in p predicts a pilot miss never hits; the posterior does not, and is closer
    assert ttspm.mae(eb, observed) < 0.02 < ttspm.mae(mean_of_curves, observed)
    # a posterior concentrated at p gives the plug-in saturation point
    for q in (0.05, 0.3):
        k = 10**7
        assert ttspm.posterior_saturation([q * 8], 8, q * k, (1 - q) * k, 0.01)[0] == ttspm.saturation_point(q, q, 0.01)
    with pytest.raises(ValueError, match="c: every problem has 0 of 8 correct"):
        ttspm.fit_beta_binomial([0, 0, 0], 8)


def test_trajectories_and_rethink_rates():
    attempts = [[True], [False, False, True], [False, True], [False, False, False, False]]
    traj = ttspm.trajectories(attempts, 3)
    assert traj.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]]
    rates = ttspm.rethink_rates(traj)
    # wrong states before a round: 3 + 2 + 1 + ... = 0,0,0 | 1,1,0 | 1,0,0 | 1,1,1 -> 6; fixed: 2
    assert rates["p0"] == 0.25 and rates["p_rethink"] == 2 / 6 and rates["p_relapse"] == 0.0
    p0, pr = ttspm.per_problem_rates(traj, 2, pooled_rethink=0.5)
    assert p0.tolist() == [0.5, 0.0] and pr.tolist() == [1 / 2, 1 / 4]
    with pytest.raises(ValueError, match="attempts: problem 0 has 3 attempts, more than rounds"):
        ttspm.trajectories([[False, False, True]], 1)
    with pytest.raises(ValueError, match="replicas: 4 trajectories are not a multiple of 3"):
        ttspm.per_problem_rates(traj, 3, 0.5)


def test_fit_geometric_recovers_the_form():
    ns = np.arange(1, 12)
    fit = experiment.fit_geometric(ns, ttspm.upper_bound(0.2, 0.35, ns))
    assert abs(fit["first"] - 0.2) < 1e-4 and abs(fit["p"] - 0.35) < 1e-4 and fit["r2"] > 0.999999


@pytest.fixture(scope="module")
def tiny():
    spec = zoo.ModelSpec(attention="gqa", vocab_size=reasoning.VOCAB_SIZE, d_model=32, n_layers=1, n_heads=4,
                         n_kv_heads=2, d_ff=64, max_seq_len=96)
    return reasoning.as_policy(zoo.build(spec, seed=0), spec), reasoning.generate(4, (1, 2), seed=5, modulus=7)


def test_experiments_run_on_a_real_policy_and_are_deterministic(tiny):
    policy, problems = tiny
    oracle = reasoning.OracleVerifier()
    kw = dict(pilot=4, fresh=12, eps=0.05, temperature=1.0, seed=3, verifier=oracle, selection_ns=[1, 12])
    tables = experiment.run_parallel(policy, problems, **kw)
    per, sel = tables["per_problem"], tables["selection"]
    assert len(per) == 4 and len(tables["curves"]) == 12
    assert (per["fresh_correct"] <= 12).all() and (per["nstar_pred"] >= 1).all()
    # selection picks one of the first N samples: never above their Hit@N (with the oracle not always
    # equal: it scores an unfinished completion without an answer 1.0, like a correct one)
    assert (sel["best_of_n_prm"] <= sel["hit_first_n"] + 1e-12).all()
    assert (sel["majority_vote"] <= sel["hit_first_n"] + 1e-12).all()
    again = experiment.run_parallel(policy, problems, **kw)
    assert again["per_problem"].equals(per) and again["curves"].equals(tables["curves"])
    metrics = experiment.parallel_metrics(tables, 0.05)
    assert 0 <= metrics["parallel_mae_pilot"] <= 1 and metrics["selection_n"] == 12
    curves, m = experiment.run_sequential(policy, problems, replicas=2, rounds=3, verifier=oracle, threshold=0.5,
                                          temperature=1.0, seed=3, eps=0.05)
    assert list(curves["attempts"]) == [1, 2, 3, 4]
    assert (np.diff(curves["observed"]) >= 0).all()  # an oracle trigger never drops a correct attempt
    assert m["seq_p_relapse"] == 0.0 or math.isnan(m["seq_p_relapse"])
    assert m["seq_trajectories"] == 8


def test_sequential_saturation_compares_integer_counts():
    traj = np.zeros((400, 5), bool)
    traj[:10, :2] = True
    traj[:14, 2:] = True  # attempt 3 adds 4 correct trajectories of 400: a gain of exactly eps = 0.01
    extra, allowed = experiment.saturation_counts(traj, 2, 0.01)
    assert extra == 4 and allowed == 4 and extra / allowed == 1  # a tie, exactly (floats: 1.0000000000000009)
    assert experiment.saturation_counts(traj, 1, 0.01) == (0, 4) and experiment.saturation_counts(traj, 3, 0.03)[1] == 12
    with pytest.raises(ValueError, match=r"n: the gain of attempt n \+ 1 needs 1 <= n < 5 attempts, got 5"):
        experiment.saturation_counts(traj, 5, 0.01)


def test_saturation_metrics_skip_problems_that_agree_by_construction():
    fresh, eps = 8, 0.05
    # 2 trivial problems (fresh 0/8 and 8/8: N* = 1 both ways, gain 0) and 3 mixed ones
    per = pd.DataFrame({"pilot_correct": [0, 4, 1, 2, 3], "fresh_correct": [0, 8, 2, 3, 4],
                        "nstar_pred": [1, 1, 5, 3, 2], "nstar_obs": [1, 1, 4, 4, 2],
                        "gain_obs_at_pred": [0.0, 0.0, 0.01, 0.2, 0.04], "nstar_censored": False})
    per["nstar_beta_binomial"], per["gain_obs_at_beta_binomial"] = per["nstar_pred"], per["gain_obs_at_pred"]
    per["nstar_insample"] = per["nstar_obs"]
    ns = np.arange(1, fresh + 1)
    curves = pd.DataFrame({"N": ns, "observed": 1 - 0.5 ** ns, "pred_mean_of_curves": 1 - 0.5 ** ns,
                           "pred_curve_of_mean": 1 - 0.4 ** ns, "pred_insample": 1 - 0.5 ** ns, "pred_beta_binomial": np.nan})
    m = experiment.parallel_metrics({"per_problem": per, "curves": curves, "cost": pd.DataFrame({"tokens_per_sample": [9.0]})},
                                    eps)
    assert m["nontrivial_problems"] == 3
    assert m["share_gain_below_eps_at_predicted_nstar"] == pytest.approx(2 / 3)
    assert m["share_gain_below_eps_at_predicted_nstar_all"] == pytest.approx(4 / 5)
    assert m["nstar_pearson"] == pytest.approx(np.corrcoef([5, 3, 2], [4, 4, 2])[0, 1])
    assert m["nstar_pearson_all"] == pytest.approx(np.corrcoef([1, 1, 5, 3, 2], [1, 1, 4, 4, 2])[0, 1])
    only_trivial = experiment.parallel_metrics({"per_problem": per.iloc[:2], "curves": curves,
                                                "cost": pd.DataFrame({"tokens_per_sample": [9.0]})}, eps)
    assert only_trivial["nontrivial_problems"] == 0 and math.isnan(only_trivial["share_gain_below_eps_at_predicted_nstar"])


def test_params_errors_name_the_key():
    base = yaml.safe_load((CONF / "p20" / "base.yaml").read_text())
    base.pop("defaults", None)
    config.Params(**base)
    with pytest.raises(ValueError, match=r"fresh_samples: 16 censors saturation points at epsilon=0.01; need >= 39"):
        config.Params(**(base | {"fresh_samples": 16, "selection_ns": [1]}))
    with pytest.raises(ValueError, match=r"selection_ns: every N must be in \[1, fresh_samples=64\]"):
        config.Params(**(base | {"selection_ns": [128]}))
    with pytest.raises(ValueError, match=r"difficulty: needs 1 <= lo <= hi, got \(4, 2\)"):
        config.Params(**(base | {"difficulty": [4, 2]}))
    with pytest.raises(ValueError, match=r"seq_mae_attempts: 12 is more than the seq_rounds \+ 1 = 11 attempts run"):
        config.Params(**(base | {"seq_rounds": 10, "seq_mae_attempts": 12}))
