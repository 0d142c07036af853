"""The RL runs of paper 10: the same policy copy trained by every recipe on the same problems.

A run is shared.rl.train (it copies the policy; the artifact's weights are never changed);
its evaluations become rows of one long table (recipe, seed, step, compute, pass rates) that the
fits read. R = the sampled pass@1 on the held-out set (mean over RLConfig.eval_samples samples per
problem, the paper's mean@16 on an iid validation set); C = cumulative RL FLOPs (generation +
training, shared.rl's accounting).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

COLUMNS = ["recipe", "seed", "step", "flops", "flops_gen", "flops_train", "gen_tokens", "train_tokens", "samples",
           "train_reward", "eval_greedy", "eval_sampled", "ratio_mean", "clip_frac", "seconds"]


def problems(task, params) -> tuple[list, list]:
    """(training pool, held-out set) at params.difficulty from the artifact's task; deterministic per pool_seed."""
    difficulty = params.difficulty if isinstance(params.difficulty, int) else tuple(params.difficulty)
    pool_size = max(params.recipe(name).pool_size for name in params.recipes)
    n_eval = max(params.recipe(name).eval_problems for name in params.recipes)
    pool = task.generate(pool_size, difficulty=difficulty, seed=params.pool_seed)
    held_out = task.generate(n_eval, difficulty=difficulty, seed=params.pool_seed + 1)
    return pool, held_out


def plan(params) -> list[tuple[str, int]]:
    """(recipe, seed) of every run: each recipe at params.seed, then the scalerl recipe at each spread seed."""
    runs = [(name, params.seed) for name in params.recipes]
    return runs + [(params.scalerl, s) for s in params.spread_seeds if s != params.seed]


def run_all(policy, params, pool, held_out, progress: Callable | None = None) -> pd.DataFrame:
    """Every planned run; the evaluation rows of their histories as one table (COLUMNS). ``ratio_mean`` and
    ``clip_frac`` there are running means over the steps so far (how off-policy the run was, and how often the
    clip / truncation bit)."""
    from shared import rl

    tables = []
    for name, seed in plan(params):
        history = rl.train(policy, pool, params.recipe(name), held_out, seed=seed, progress=progress)
        table = history.table.assign(recipe=name, seed=seed)
        for col in ("ratio_mean", "clip_frac"):
            table[col] = table[col].expanding().mean()
        tables.append(table[table["eval_greedy"].notna()][COLUMNS])
    return pd.concat(tables, ignore_index=True)


def run_metrics(table: pd.DataFrame, params) -> dict[str, float | None]:
    """R0 and, per recipe (main seed), its total compute, mean importance ratio and clip fraction (None when no
    update ran)."""
    main = table[table["seed"] == params.seed]
    out: dict[str, float | None] = {"r0": round(float(main.loc[main["step"] == 0, "eval_sampled"].iloc[0]), 4)}
    for name, g in main.groupby("recipe", sort=False):
        last = g[g["step"] == g["step"].max()].iloc[0]
        out[f"{name}_total_gflops"] = round(float(last["flops"]) / 1e9, 3)
        for col in ("ratio_mean", "clip_frac"):
            out[f"{name}_{col}"] = round(float(last[col]), 6) if pd.notna(last[col]) else None
    return out


def claim_metrics(fits: pd.DataFrame, params) -> dict[str, float | None]:
    """The metrics of claims.yaml from the per-run fits (law.fit_runs): per recipe (main seed) A, B, C_mid,
    final R, gain, extrapolation errors and identifiability flags (law.identifiability); the comparisons
    baseline / details / scalerl; the seed spread of A.

    Every A / B comparison is None (the claim shows as not run) unless each fit it compares is
    identifiable: A and B off their bounds and the run past MIN_FINAL_OVER_MID x C_mid. A number from
    a fit that did not pin A is an artefact of the fit, not a result. (Rule added after the first cpu run.)"""
    from paper10 import law

    ident = {(r.recipe, int(r.seed)): law.identifiability(r.A, r.B, r.C_mid, r.C_final) for r in fits.itertuples()}
    main = fits[fits["seed"] == params.seed].set_index("recipe")
    out: dict[str, float | None] = {}
    for name, row in main.iterrows():
        flags = ident[(name, params.seed)]
        out |= {f"{name}_A": row["A"], f"{name}_B": row["B"], f"{name}_C_mid_gflops": row["C_mid"] / 1e9,
                f"{name}_final": row["observed_final"], f"{name}_gain": row["observed_final"] - row["R0"],
                f"{name}_sigmoid_error": row["sigmoid_error"], f"{name}_power_error": row["power_error"],
                f"{name}_final_over_mid": flags["final_over_mid"], f"{name}_a_at_bound": int(flags["a_at_bound"]),
                f"{name}_b_at_bound": int(flags["b_at_bound"]), f"{name}_identifiable": int(flags["identifiable"])}
    out["extrap_error_sigmoid_max"] = main["sigmoid_error"].max()
    out["extrap_error_sigmoid_mean"] = main["sigmoid_error"].mean()
    out["extrap_error_power_mean"] = main["power_error"].mean()
    out["sigmoid_minus_power_error"] = (main["sigmoid_error"] - main["power_error"]).mean()

    def ok(*names) -> bool:
        return all(ident[(getattr(params, k), params.seed)]["identifiable"] for k in names)

    base, details, scalerl = (main.loc[getattr(params, k)] for k in ("baseline", "details", "scalerl"))
    out["a_details_minus_baseline"] = details["A"] - base["A"] if ok("details", "baseline") else None
    out["a_scalerl_minus_baseline"] = scalerl["A"] - base["A"] if ok("scalerl", "baseline") else None
    if ok("scalerl", "details"):
        out["details_abs_a_shift"] = abs(scalerl["A"] - details["A"])
        rel_b = abs(scalerl["B"] - details["B"]) / ((scalerl["B"] + details["B"]) / 2)
        rel_a = abs(scalerl["A"] - details["A"]) / max((scalerl["A"] + details["A"]) / 2, 1e-9)
        out["details_rel_b_minus_rel_a"] = rel_b - rel_a
    else:
        out["details_abs_a_shift"] = out["details_rel_b_minus_rel_a"] = None
    seeds = fits[fits["recipe"] == params.scalerl]
    out["scalerl_seeds_identifiable"] = sum(ident[(params.scalerl, int(s))]["identifiable"] for s in seeds["seed"])
    if len(seeds) > 1:
        every = out["scalerl_seeds_identifiable"] == len(seeds)
        out["a_seed_spread"] = seeds["A"].max() - seeds["A"].min() if every else None
    return {k: v if v is None or isinstance(v, int) else round(float(v), 4) for k, v in out.items()}
