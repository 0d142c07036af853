"""The RL runs of paper 34 on the reasoning artifact's policies (shared.rl.train on copies).

:func:`size_sweep` trains every size with the same RLConfig and returns the tidy ErrRate table
(law.errrate_table) and the per-step histories; :func:`reuse_sweep` trains one policy for the
same number of steps with unique pools of steps x prompts / tau problems, for several seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from shared import rl

from . import law


def size_sweep(policies: Mapping, sizes: Sequence[str], cfg: rl.RLConfig, pool: Sequence, evals: Sequence,
               seed: int, err_floor: float, column: str = "eval_sampled",
               progress: Callable | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RL-train each named policy; returns (ErrRate table of every evaluation, per-step history of all sizes).
    ``column``: the pass@1 of the history that is the test loss (eval_sampled or eval_greedy)."""
    missing = [s for s in sizes if s not in policies]
    if missing:
        raise ValueError(f"sizes: {missing} are not policies of the reasoning artifact; have {', '.join(policies)}")
    tables, histories = [], []
    for name in sizes:
        policy = policies[name]
        hist = rl.train(policy, pool, cfg, evals, seed=seed, progress=progress)
        tables.append(law.errrate_table(hist.table, name, policy.params, err_floor, column))
        histories.append(hist.table.assign(size=name, N=policy.params))
    return pd.concat(tables, ignore_index=True), pd.concat(histories, ignore_index=True)


def reuse_sweep(policy, cfg: rl.RLConfig, taus: Sequence[float], seeds: Sequence[int], pool: Sequence,
                evals: Sequence, column: str = "eval_sampled", progress: Callable | None = None) -> pd.DataFrame:
    """Equal steps, unique pool = the first steps x prompts_per_step / tau problems of ``pool``:
    one row per (tau, seed, evaluated step) with the ErrRate (1 - ``column``), samples seen and unique prompts."""
    rows = []
    for tau in taus:
        run_cfg = cfg.model_copy(update={"reuse": float(tau)})
        for seed in seeds:
            hist = rl.train(policy, pool, run_cfg, evals, seed=seed, progress=progress).table
            ev = hist[hist["eval_greedy"].notna()]
            rows.append(pd.DataFrame(dict(tau=float(tau), seed=seed, pool=run_cfg.pool_size, step=ev["step"].to_numpy(),
                                          samples=ev["samples"].to_numpy(), unique_prompts=ev["unique_prompts"].to_numpy(),
                                          err=1.0 - ev[column].to_numpy(dtype=float))))
    return pd.concat(rows, ignore_index=True)
