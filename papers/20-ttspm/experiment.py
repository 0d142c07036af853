"""The two experiments of paper 20 on the reasoning artifact's policy: parallel (pilot samples ->
predicted Hit@N and N* per problem; fresh samples -> observed) and sequential (revision
trajectories of a pilot run -> p0 and p_rethink -> the geometric model; a fresh run -> observed).
Every sampler call has its own seed so pilot and fresh samples are independent."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pandas as pd

from paper20 import ttspm
from shared import reasoning

PILOT, FRESH = 0, 1  # sample seeds of the parallel experiment (offsets from the run's seed)
SEQ_PILOT, SEQ_FRESH = 1000, 2000  # revise uses seed + round, so its two runs are kept far apart


def load_policy(folder, name: str, device: str = "cpu"):
    """The artifact's policy ``name`` and its task; one line naming the key when it has no such policy."""
    return reasoning.load_policy(folder, name, device=device), reasoning.load_task(folder)


def correctness(problems: Sequence[reasoning.Problem], texts: Sequence[Sequence[str]]) -> np.ndarray:
    """(problems, n) boolean: is each completion's answer right?"""
    return np.array([[reasoning.check(p, t) for t in row] for p, row in zip(problems, texts)], bool)


# ----------------------------------------------------------------------------- parallel
def run_parallel(policy, problems, *, pilot: int, fresh: int, eps: float, temperature: float, seed: int,
                 verifier=None, selection_ns: Sequence[int] = ()) -> dict[str, pd.DataFrame]:
    """Per-problem table, aggregate curves (observed and predicted) and, given a verifier,
    best-of-N / majority accuracy on the fresh samples (Hit@N is their ceiling)."""
    pilot_s = reasoning.sample(policy, problems, pilot, temperature=temperature, seed=seed + PILOT)
    fresh_s = reasoning.sample(policy, problems, fresh, temperature=temperature, seed=seed + FRESH)
    c_pilot = correctness(problems, pilot_s.texts).sum(1)
    ok_fresh = correctness(problems, fresh_s.texts)
    c_fresh = ok_fresh.sum(1)
    ns = np.arange(1, fresh + 1)
    observed = ttspm.observed_curves(ok_fresh, ns)  # (P, fresh)
    p_pilot, p_fresh = c_pilot / pilot, c_fresh / fresh
    pred = ttspm.hit_at_n(p_pilot[:, None], ns[None, :])
    nstar_pred = ttspm.saturation_points(p_pilot, p_pilot, eps)
    nstar_obs = np.array([ttspm.observed_saturation(row, eps) for row in observed])
    gains = np.diff(observed, axis=1)  # gains[:, N-1] = Hit@(N+1) - Hit@N
    at = np.minimum(nstar_pred, fresh - 1) - 1
    per_problem = pd.DataFrame({
        "problem": np.arange(len(problems)), "difficulty": [p.difficulty for p in problems],
        "pilot_correct": c_pilot, "fresh_correct": c_fresh, "p_pilot": p_pilot, "p_fresh": p_fresh,
        "nstar_pred": nstar_pred, "nstar_obs": nstar_obs, "nstar_censored": nstar_obs >= fresh,
        "gain_obs_at_pred": gains[np.arange(len(problems)), at],
    })  # fmt: skip
    curves = pd.DataFrame({
        "N": ns, "observed": observed.mean(0),
        "pred_mean_of_curves": pred.mean(0),  # the paper's model per problem, p from the pilot
        "pred_curve_of_mean": ttspm.hit_at_n(p_pilot.mean(), ns),  # one p for all problems
        "pred_insample": ttspm.hit_at_n(p_fresh[:, None], ns[None, :]).mean(0),  # p from the same fresh samples
    })  # fmt: skip
    try:
        a, b = ttspm.fit_beta_binomial(c_pilot, pilot)
        curves["pred_beta_binomial"] = ttspm.posterior_hit(c_pilot, pilot, a, b, ns).mean(0)
        nstar_eb = ttspm.posterior_saturation(c_pilot, pilot, a, b, eps, max_n=10 * fresh)
    except ValueError:  # no variation across problems in the pilot: no prior to fit
        a = b = float("nan")
        curves["pred_beta_binomial"] = np.nan
        nstar_eb = nstar_pred
    per_problem["nstar_beta_binomial"] = nstar_eb
    per_problem["gain_obs_at_beta_binomial"] = gains[np.arange(len(problems)), np.minimum(nstar_eb, fresh - 1) - 1]
    per_problem["nstar_insample"] = ttspm.saturation_points(p_fresh, p_fresh, eps)  # semi-circular: p from the same samples
    out = {"per_problem": per_problem, "curves": curves,
           "prior": pd.DataFrame({"a": [a], "b": [b]}),
           "cost": pd.DataFrame({"tokens_per_sample": [fresh_s.cost.tokens / (len(problems) * fresh)],
                                 "flops_per_sample": [fresh_s.cost.flops / (len(problems) * fresh)]})}
    if verifier is not None and selection_ns:
        rows = []
        for n in selection_ns:
            bon = reasoning.best_of_n(policy, problems, n, verifier, samples=fresh_s)
            maj = reasoning.majority_vote(policy, problems, n, samples=fresh_s)
            rows.append({"N": n, "hit_first_n": float(ok_fresh[:, :n].any(1).mean()), "best_of_n_prm": bon.accuracy,
                         "majority_vote": maj.accuracy})
        out["selection"] = pd.DataFrame(rows)
    return out


def parallel_metrics(tables: dict[str, pd.DataFrame], eps: float) -> dict[str, float]:
    """The parallel metrics. The saturation-point metrics (nstar_pearson, share_gain_below_eps_*) are over the
    non-trivial problems, 0 < fresh correct < fresh samples (a problem the fresh samples always or never solve has a
    flat observed curve and, nearly always, a pilot that agrees: predicted and observed N* agree by construction);
    their ``*_all`` twins count every problem (the metrics before the change)."""
    per, curves = tables["per_problem"], tables["curves"]
    obs = curves["observed"]
    fresh = int(len(curves))
    mixed = per[(per["fresh_correct"] > 0) & (per["fresh_correct"] < fresh)]
    r = pearson(mixed["nstar_pred"], mixed["nstar_obs"])
    spear = float(mixed["nstar_pred"].corr(mixed["nstar_obs"], method="spearman")) if not np.isnan(r) else float("nan")
    last = curves.iloc[-1]
    out = {
        "parallel_problems": len(per),
        "parallel_pass1": float(obs.iloc[0]),
        "parallel_hit_max": float(obs.iloc[-1]),
        "parallel_mae_pilot": ttspm.mae(curves["pred_mean_of_curves"], obs),
        "parallel_mae_curve_of_mean": ttspm.mae(curves["pred_curve_of_mean"], obs),
        "parallel_mae_insample": ttspm.mae(curves["pred_insample"], obs),
        "parallel_mae_beta_binomial": ttspm.mae(curves["pred_beta_binomial"], obs),
        "parallel_jensen_gap_max_n": float(last["pred_curve_of_mean"] - last["pred_mean_of_curves"]),
        "pilot_zero_share": float((per["pilot_correct"] == 0).mean()),
        "nontrivial_problems": len(mixed),
        "nstar_pearson": r,
        "nstar_spearman": spear,
        "nstar_pearson_all": pearson(per["nstar_pred"], per["nstar_obs"]),
        "nstar_mean_pred": float(per["nstar_pred"].mean()),
        "nstar_mean_obs": float(per["nstar_obs"].mean()),
        "nstar_censored_share": float(per["nstar_censored"].mean()),
        "share_gain_below_eps_at_predicted_nstar": share(mixed["gain_obs_at_pred"] <= eps),
        "share_gain_below_eps_at_predicted_nstar_all": share(per["gain_obs_at_pred"] <= eps),
        "nstar_pearson_beta_binomial": pearson(mixed["nstar_beta_binomial"], mixed["nstar_obs"]),
        "share_gain_below_eps_beta_binomial": share(mixed["gain_obs_at_beta_binomial"] <= eps),
        "nstar_pearson_insample": pearson(mixed["nstar_insample"], mixed["nstar_obs"]),
        "tokens_per_sample": float(tables["cost"]["tokens_per_sample"].iloc[0]),
    }
    out["heterogeneity_mae_ratio"] = out["parallel_mae_pilot"] / out["parallel_mae_curve_of_mean"] \
        if out["parallel_mae_curve_of_mean"] > 0 else float("nan")
    out["heterogeneity_mae_ratio_beta_binomial"] = out["parallel_mae_beta_binomial"] / out["parallel_mae_curve_of_mean"] \
        if out["parallel_mae_curve_of_mean"] > 0 else float("nan")
    fit = fit_geometric(curves["N"], obs)
    out |= {"parallel_geometric_first": fit["first"], "parallel_geometric_p": fit["p"], "parallel_geometric_r2": fit["r2"]}
    if "selection" in tables:
        sel = tables["selection"].iloc[-1]
        out |= {"selection_n": int(sel["N"]), "selection_best_of_n_prm": float(sel["best_of_n_prm"]),
                "selection_majority_vote": float(sel["majority_vote"]), "selection_hit": float(sel["hit_first_n"])}
    return out


def pearson(x, y) -> float:
    """Pearson r; NaN when either side is constant (or has fewer than 2 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 and x.std() > 0 and y.std() > 0 else float("nan")


def share(flags) -> float:
    """Share of True in ``flags``; NaN when empty."""
    flags = np.asarray(flags, bool)
    return float(flags.mean()) if flags.size else float("nan")


# ----------------------------------------------------------------------------- sequential
def run_revisions(policy, problems, *, replicas: int, rounds: int, verifier, threshold: float, temperature: float,
                  seed: int) -> tuple[np.ndarray, reasoning.SearchResult]:
    """(problems * replicas, rounds + 1) correctness trajectories of ``reasoning.revise`` (rows
    problem-major: replicas of problem 0 first)."""
    reps = [p for p in problems for _ in range(replicas)]
    res = reasoning.revise(policy, reps, rounds, verifier, threshold=threshold, temperature=temperature, seed=seed)
    attempts = [[reasoning.check(p, t) for t in row] for p, row in zip(reps, res.extra["attempts"])]
    return ttspm.trajectories(attempts, rounds), res


def run_sequential(policy, problems, *, replicas: int, rounds: int, verifier, threshold: float, temperature: float,
                   seed: int, eps: float, mae_attempts: int | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Pilot run -> p0, p_rethink (pooled and per problem) -> predicted accuracy after N attempts;
    fresh run -> observed; the MAEs average attempts 1..``mae_attempts`` (default: all). Returns the
    curve table and the metrics."""
    kw = dict(replicas=replicas, rounds=rounds, verifier=verifier, threshold=threshold, temperature=temperature)
    pilot, _ = run_revisions(policy, problems, seed=seed + SEQ_PILOT, **kw)
    fresh, res = run_revisions(policy, problems, seed=seed + SEQ_FRESH, **kw)
    rates, rates_fresh = ttspm.rethink_rates(pilot), ttspm.rethink_rates(fresh)
    p_r = rates["p_rethink"] if not np.isnan(rates["p_rethink"]) else 0.0
    p0_i, pr_i = ttspm.per_problem_rates(pilot, replicas, p_r)
    ns = np.arange(1, rounds + 2)  # attempts
    observed = fresh.mean(0)
    curves = pd.DataFrame({
        "attempts": ns, "observed": observed, "pilot_observed": pilot.mean(0),
        "pred_geometric": ttspm.upper_bound(rates["p0"], p_r, ns),
        "pred_per_problem": ttspm.upper_bound(p0_i[:, None], pr_i[:, None], ns[None, :]).mean(0),
        "parallel_same_p": ttspm.hit_at_n(rates["p0"], ns),  # what independent retries of the first attempt would give
    })  # fmt: skip
    nstar = ttspm.saturation_point(rates["p0"], p_r, eps)
    gain_at = min(nstar, rounds)  # beyond the run: the last measured gain (larger in expectation: conservative)
    extra, allowed = saturation_counts(fresh, gain_at, eps)
    fit = fit_geometric(ns, observed)
    k = mae_attempts or len(ns)
    metrics = {
        "seq_trajectories": int(pilot.shape[0]),
        "seq_p0": rates["p0"], "seq_p_rethink": p_r, "seq_p_relapse": rates["p_relapse"],
        "seq_p_rethink_fresh": rates_fresh["p_rethink"], "seq_p_relapse_fresh": rates_fresh["p_relapse"],
        "seq_acc_first": float(observed[0]), "seq_acc_last": float(observed[-1]),
        "seq_mae_pilot": ttspm.mae(curves["pred_geometric"][:k], observed[:k]),
        "seq_mae_per_problem": ttspm.mae(curves["pred_per_problem"][:k], observed[:k]),
        "seq_mae_all_attempts": ttspm.mae(curves["pred_geometric"], observed),
        "seq_nstar_pred": nstar, "seq_nstar_past_run": int(nstar > rounds),
        "seq_extra_correct_at_predicted_nstar": extra, "seq_extra_allowed_at_eps": float(allowed),
        "seq_gain_ratio_at_predicted_nstar": float(extra / allowed),
        "seq_geometric_first": fit["first"], "seq_geometric_p": fit["p"], "seq_geometric_r2": fit["r2"],
        "seq_tokens_per_trajectory": res.cost.tokens / pilot.shape[0],
        "seq_attempts_per_trajectory": float(np.mean([len(a) for a in res.extra["attempts"]])),
    }  # fmt: skip
    return curves, metrics


def saturation_counts(traj: np.ndarray, n: int, eps: float) -> tuple[int, Fraction]:
    """The observed gain of attempt n + 1 of a (trajectories, attempts) correctness matrix as counts: the
    extra trajectories correct after attempt n + 1 than after attempt n, and what eps allows, eps x trajectories
    (exact: eps as written in decimal), so that a gain equal to eps is a tie exactly, not a float rounding."""
    traj = np.asarray(traj, bool)
    if not 1 <= n < traj.shape[1]:
        raise ValueError(f"n: the gain of attempt n + 1 needs 1 <= n < {traj.shape[1]} attempts, got {n}")
    extra = int(traj[:, n].sum()) - int(traj[:, n - 1].sum())
    return extra, Fraction(str(eps)) * traj.shape[0]


# ----------------------------------------------------------------------------- the shared form
def fit_geometric(ns, acc) -> dict[str, float]:
    """Least-squares fit of F(N) = 1 - (1 - first)(1 - p)^(N-1) to an accuracy curve: the
    upper-bound form both paradigms share; R^2 on the curve."""
    from scipy.optimize import least_squares

    ns, acc = np.asarray(ns, float), np.asarray(acc, float)
    if np.ptp(acc) == 0:
        return {"first": float(acc[0]), "p": 0.0, "r2": float("nan")}

    def resid(theta):
        first, p = 1 / (1 + np.exp(-theta))
        return ttspm.upper_bound(first, p, ns) - acc

    x0 = np.log([max(acc[0], 1e-3) / max(1 - acc[0], 1e-3), 0.1 / 0.9])
    sol = least_squares(resid, x0)
    first, p = 1 / (1 + np.exp(-sol.x))
    ss = float(np.sum((acc - acc.mean()) ** 2))
    return {"first": float(first), "p": float(p), "r2": 1 - float(np.sum(sol.fun ** 2)) / ss}
