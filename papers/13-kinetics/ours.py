"""Kinetics' question on our own policies: with test-time sampling (majority vote or best-of-N) on the
shared reasoning task, is the cheapest policy size for an accuracy target larger when the cost counts
KV-cache reads (FLOPs + I x bytes) than when it counts FLOPs only?

Costs are the substrate's own counters (`shared.reasoning.Cost`: FLOPs summed over generated tokens at
their context length, KV-cache bytes read), per problem. The functions take the `shared.reasoning`
module as an argument (the notebook imports it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from paper13 import cost

def evaluate(reasoning, policies: dict, problems, ns, *, method: str, verifier=None, max_new_tokens: int,
             temperature: float, seed: int, intensity: float, progress=None) -> pd.DataFrame:
    """One row per (policy, N): accuracy of ``method`` with N samples, FLOPs and KV bytes per problem,
    eFLOPs = FLOPs + intensity x bytes. Columns as `cost.config_table` (coverage = accuracy). Each
    policy samples max(ns) completions once; smaller N use the first N of them (nested, as the
    paper's trial counts), with the cost of those N."""
    rows = []
    names = list(policies)
    for name in progress(names, desc="policies") if progress else names:
        policy = policies[name]
        drawn = reasoning.sample(policy, problems, max(ns), temperature=temperature, seed=seed, max_new_tokens=max_new_tokens)
        for n in ns:
            if method == "best_of_n":
                res = reasoning.best_of_n(policy, problems, n, verifier, samples=drawn)
            else:
                res = reasoning.majority_vote(policy, problems, n, samples=drawn)
            flops = res.cost.flops / len(problems)
            kv = res.cost.kv_bytes_read / len(problems)
            rows.append({
                "model": name, "params_b": policy.params / 1e9, "trials": int(n), "coverage": float(np.mean(res.correct)),
                "flops": float(flops), "kv_bytes": float(kv), "eflops": float(flops + intensity * kv),
            })  # fmt: skip
    return pd.DataFrame(rows)


def compare(table: pd.DataFrame, n_targets: int) -> tuple[pd.DataFrame, dict]:
    """FLOPs-only vs eFLOPs picks over ``n_targets`` accuracy targets spanning what the table reaches
    (above the lowest accuracy, up to the highest)."""
    lo, hi = float(table["coverage"].min()), float(table["coverage"].max())
    if hi <= lo:  # e.g. policies that solve nothing: no target separates the rules
        print(f"every configuration has accuracy {hi}: nothing to compare")
        return pd.DataFrame(), dict.fromkeys(("eflops_not_smaller_share", "eflops_larger_count", "max_excess"))
    targets = np.linspace(lo, hi, n_targets + 1)[1:]
    picks = cost.choices(table, targets)
    return picks, cost.summarise(picks, floor=float(targets[len(targets) // 2]))
