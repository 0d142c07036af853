"""Paper 35 (Mélange): GPU allocation as cost-aware bin packing, an integer linear program solved
by HiGHS (scipy.optimize.milp).

Items are slices: each bucket's request rate split into ``slice_factor`` equal slices. Bins are
instance types j with an hourly cost c_j and, per bucket, a maximum throughput T_j(b) under the SLO
(from the profiles). Variables: x_sj in {0, 1} (slice s goes to type j) and y_j in N (replicas of
type j). Minimise sum_j c_j y_j subject to sum_j x_sj = 1 for every slice and
sum_s x_sj * rate_s / T_j(bucket_s) <= y_j for every type (the load of a replica is the sum of the
fractions of its capacity its slices use). A slice may not go to a type with T_j(b) = 0 (it cannot
meet the SLO on it). The single-type baseline is the same program with one type allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


@dataclass(frozen=True)
class Allocation:
    cost: float  # USD per hour
    counts: dict[str, int]  # replicas per type
    assignment: np.ndarray  # slice -> type index
    feasible: bool = True


INFEASIBLE = Allocation(float("inf"), {}, np.zeros(0, dtype=int), False)


def solve(rates: np.ndarray, tputs: np.ndarray, costs: np.ndarray, names: list[str], slice_factor: int = 1,
          allowed: list[str] | None = None) -> Allocation:
    """``rates[b]``: requests/s of bucket b; ``tputs[j, b]``: max requests/s of one type-j replica on
    bucket b (0: not allowed); ``costs[j]``: USD per hour. ``allowed``: the types that may be used
    (None: all). Buckets with rate 0 are dropped. Returns the cheapest allocation (INFEASIBLE if some
    slice fits no allowed type)."""
    rates, tputs, costs = np.asarray(rates, float), np.asarray(tputs, float), np.asarray(costs, float)
    if tputs.shape != (len(names), len(rates)) or costs.shape != (len(names),):
        raise ValueError(f"solve: tputs must be (types, buckets) = ({len(names)}, {len(rates)}) and costs (types,), "
                         f"got {tputs.shape} and {costs.shape}")
    if slice_factor < 1:
        raise ValueError(f"solve: slice_factor must be >= 1, got {slice_factor}")
    if np.any(rates < 0) or np.any(tputs < 0) or np.any(costs <= 0):
        raise ValueError("solve: rates and throughputs must be >= 0 and costs > 0")
    use = np.array([allowed is None or n in allowed for n in names])
    live = np.flatnonzero(rates > 0)
    s_bucket = np.repeat(live, slice_factor)
    s_rate = np.repeat(rates[live] / slice_factor, slice_factor)
    n_s, n_t = len(s_bucket), len(names)
    if n_s == 0:
        return Allocation(0.0, {n: 0 for n in names}, np.zeros(0, dtype=int))
    ok = (tputs[:, s_bucket] > 0) & use[:, None]  # (types, slices)
    if not ok.any(axis=0).all():
        return INFEASIBLE
    load = np.where(ok, s_rate[None, :] / np.where(ok, tputs[:, s_bucket], 1.0), 0.0)  # fraction of a replica
    # variables: x (n_t * n_s, type-major), then y (n_t)
    n_x = n_t * n_s
    c = np.concatenate([np.zeros(n_x), costs])
    one_type = np.zeros((n_s, n_x + n_t))
    for j in range(n_t):
        one_type[np.arange(n_s), j * n_s + np.arange(n_s)] = 1.0
    capacity = np.zeros((n_t, n_x + n_t))
    for j in range(n_t):
        capacity[j, j * n_s:(j + 1) * n_s] = load[j]
        capacity[j, n_x + j] = -1.0
    upper_x = ok.astype(float).reshape(-1)
    upper_y = np.where(use, np.ceil(load.sum(axis=1)) + 1, 0.0)
    res = milp(c, constraints=[LinearConstraint(one_type, 1, 1), LinearConstraint(capacity, -np.inf, 0)],
               integrality=np.ones(n_x + n_t), bounds=Bounds(0, np.concatenate([upper_x, upper_y])),
               options={"mip_rel_gap": 0.0})
    if res.status != 0:
        return INFEASIBLE
    x = np.rint(res.x[:n_x]).reshape(n_t, n_s)
    y = np.rint(res.x[n_x:]).astype(int)
    return Allocation(float(costs @ y), {n: int(k) for n, k in zip(names, y)}, x.argmax(axis=0))


def best_single(rates, tputs, costs, names, slice_factor: int = 1) -> tuple[str | None, dict[str, Allocation]]:
    """Every single-type allocation (the same program with one type) and the cheapest type's name."""
    singles = {n: solve(rates, tputs, costs, names, slice_factor, allowed=[n]) for n in names}
    feasible = {n: a for n, a in singles.items() if a.feasible}
    return (min(feasible, key=lambda n: (feasible[n].cost, n)) if feasible else None), singles


def sweep(profiles, costs: dict[str, float], shares: dict[str, np.ndarray], rates: list[float],
          slice_factor: int = 1, progress=lambda it, **k: it):
    """Mélange and every single-type allocation for every (workload, SLO, rate).

    ``profiles``: rows instance, bucket, slo_ms, max_throughput_rps (profile.profile's table);
    ``costs``: USD/h per instance; ``shares``: bucket shares per workload. Returns a DataFrame, one row
    per (workload, slo_ms, rate, policy) with cost (inf: infeasible) and one column of replicas per instance;
    policy is "melange" or an instance name."""
    import pandas as pd

    names = list(costs)
    c = np.array([costs[n] for n in names])
    rows = []
    jobs = [(w, slo, r) for w in shares for slo in sorted(profiles["slo_ms"].unique()) for r in rates]
    for w, slo, r in progress(jobs, desc="allocations"):
        t = profiles[profiles["slo_ms"] == slo].pivot(index="instance", columns="bucket", values="max_throughput_rps")
        tputs = t.loc[names].to_numpy()
        rate = r * np.asarray(shares[w])
        for policy, allowed in [("melange", None)] + [(n, [n]) for n in names]:
            a = solve(rate, tputs, c, names, slice_factor, allowed)
            rows.append({"workload": w, "slo_ms": slo, "rate": r, "policy": policy, "cost": a.cost}
                        | {f"n_{n}": a.counts.get(n, 0) for n in names})
    return pd.DataFrame(rows)


def savings(table):
    """Per (workload, slo_ms, rate): Mélange's cost, the best single type and its cost, the saving vs
    it, and the largest saving vs any feasible single type."""
    import pandas as pd

    out = []
    for key, g in table.groupby(["workload", "slo_ms", "rate"], sort=True):
        mel = float(g.loc[g["policy"] == "melange", "cost"].iloc[0])
        singles = g[(g["policy"] != "melange") & np.isfinite(g["cost"])]
        if not np.isfinite(mel) or singles.empty:
            continue
        best = singles.loc[singles["cost"].idxmin()]
        out.append(dict(zip(["workload", "slo_ms", "rate"], key)) | {
            "melange_cost": mel, "best_single": best["policy"], "best_single_cost": float(best["cost"]),
            "saving_vs_best": 1 - mel / float(best["cost"]), "saving_vs_worst": 1 - mel / float(singles["cost"].max()),
            "worst_single": singles.loc[singles["cost"].idxmax(), "policy"]})
    return pd.DataFrame(out)
