"""The experiment of paper 09, as functions the notebooks call: train pilot sets, train the
ground truth, fit Projektor and the baselines, predict, select.

Every random draw has its own generator seeded by (seed, purpose, mixture, size, repeat),
so a number does not depend on the order of the loops or on which other cells ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from paper09 import baselines, projektor, sources
from shared.progress import silent

Progress = Callable[..., Iterable]
# purposes of random draws (the second seed word)
PILOT, TRUTH, OT_PREDICT, SELECT, POWER, SELECT_TRUTH = 1, 2, 3, 4, 5, 6


def rng(seed: int, *words: int) -> np.random.Generator:
    return np.random.default_rng([seed, *words])


def mixture_columns(p: np.ndarray) -> dict[str, float]:
    return {f"p{i}": float(v) for i, v in enumerate(p)}


def p_of(frame: pd.DataFrame, k: int) -> np.ndarray:
    return frame[[f"p{i}" for i in range(k)]].to_numpy(float)


def train_sets(
    market: sources.Market,
    mixtures: np.ndarray,
    sizes: list[int],
    repeats: int,
    c: float,
    seed: int,
    purpose: int,
    revealed_only: bool,
    with_ot: bool = False,
    scale: float = 1.0,
    label_cost: float = 1.0,
    progress: Progress = silent,
    desc: str = "train",
) -> pd.DataFrame:
    """Train the learner on every (mixture, size, repeat): one row each, with its accuracy
    (and the OT distance of the same training set to the validation set if ``with_ot``)."""
    jobs = [(m, n, r) for m in range(len(mixtures)) for n in sizes for r in range(repeats)]
    rows = []
    for m, n, r in progress(jobs, desc=desc, total=len(jobs)):
        p = mixtures[m]
        x, y, _ = sources.draw(market, p, n, rng(seed, purpose, m, n, r), revealed_only)
        row = {"mixture": m, **mixture_columns(p), "n": n, "repeat": r,
               "accuracy": sources.train_accuracy(x, y, market.x_val, market.y_val, c)}
        if with_ot:
            row["ot"] = projektor.transport(x, y, market.x_val, market.y_val, scale, label_cost).distance
        rows.append(row)
    return pd.DataFrame(rows)


def fit_projektor(
    market: sources.Market, pilots: pd.DataFrame, n0: int, n1: int, target: str,
    scale: float, label_cost: float, draws: int,
) -> projektor.Projektor:
    """Stage-1 models at n0 and n1 on the trained pilot sets (one row per set)."""
    k, n_val = market.k, len(market.y_val)
    stages = []
    for n in (n0, n1):
        part = pilots[pilots["n"] == n]
        perf = projektor.to_perf(part["accuracy"], target, n_val)
        stages.append(projektor.fit_stage1(n, p_of(part, k), part["ot"].to_numpy(), perf))

    def draw(p, n, generator):
        return sources.draw(market, p, n, generator, revealed_only=True)

    revealed = [(s.x[idx], s.y[idx]) for s, idx in zip(market.sources, market.revealed)]
    return projektor.Projektor(stages[0], stages[1], draw, revealed, market.x_val, market.y_val,
                               scale, label_cost, draws)


def predict_projektor(model: projektor.Projektor, mixtures: np.ndarray, targets: list[int], target: str,
                      seed: int, progress: Progress = silent) -> pd.DataFrame:
    """Projektor's accuracy at each target size for each mixture (no training; 2 x draws OT
    solves per mixture, wrapped in ``progress``)."""
    rows = []
    for m, p in progress(list(enumerate(mixtures)), desc="projektor predictions (OT)", total=len(mixtures)):
        perf0, perf1, d0, d1 = model.predict_pilots(p, rng(seed, OT_PREDICT, m))
        for n in targets:
            perf = projektor.project(n, model.n0, model.n1, perf0, perf1)
            rows.append({"mixture": m, "n": n, "method": "projektor",
                         "predicted": float(projektor.to_accuracy(perf, target)), "ot_n0": d0, "ot_n1": d1})
    return pd.DataFrame(rows)


def predict_projection_only(pilots_eval: pd.DataFrame, n0: int, n1: int, targets: list[int], target: str,
                            n_val: int) -> pd.DataFrame:
    """Stage 2 alone: the projection of *trained* accuracies at n0 and n1 (mean over repeats)."""
    mean = pilots_eval.groupby(["mixture", "n"])["accuracy"].mean().unstack("n")
    rows = []
    for m, row in mean.iterrows():
        perf0, perf1 = (projektor.to_perf(row[s], target, n_val) for s in (n0, n1))
        for n in targets:
            perf = projektor.project(n, n0, n1, perf0, perf1)
            rows.append({"mixture": int(m), "n": n, "method": "projection_of_trained_pilots",
                         "predicted": float(projektor.to_accuracy(perf, target))})
    return pd.DataFrame(rows)


def predict_last_value(pilots_eval: pd.DataFrame, n1: int, targets: list[int]) -> pd.DataFrame:
    mean = pilots_eval[pilots_eval["n"] == n1].groupby("mixture")["accuracy"].mean()
    return pd.DataFrame([{"mixture": int(m), "n": n, "method": "last_value", "predicted": float(a)}
                         for m, a in mean.items() for n in targets])


def predict_power_law(pilots_eval: pd.DataFrame, n0: int, targets: list[int], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-mixture power-law fits on every pilot size of that mixture (all repeats as points)."""
    rows, params = [], []
    for m, part in pilots_eval.groupby("mixture"):
        fit = baselines.fit_power_law(part["n"].to_numpy(), part["accuracy"].to_numpy(), n0, seed=seed)
        params.append({"mixture": int(m), **fit.values, "r2": fit.r2, "converged": fit.converged})
        for n, pred in zip(targets, baselines.predict_power_law(fit, targets, n0)):
            rows.append({"mixture": int(m), "n": n, "method": "power_law", "predicted": float(pred)})
    return pd.DataFrame(rows), pd.DataFrame(params)


def predict_mixing_law(pilots: pd.DataFrame, mixtures: np.ndarray, n0: int, targets: list[int], k: int,
                       seed: int):
    """One mixing-law fit on Projektor's own pilot sets, read at every mixture and target size."""
    fit = baselines.fit_mixing_law(p_of(pilots, k), pilots["n"].to_numpy(), pilots["accuracy"].to_numpy(), n0,
                                   seed=seed)
    rows = []
    for n in targets:
        for m, pred in enumerate(baselines.predict_mixing_law(fit, mixtures, n, n0)):
            rows.append({"mixture": m, "n": n, "method": "mixing_law", "predicted": float(pred)})
    return pd.DataFrame(rows), fit


def attach_truth(predictions: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    actual = truth.groupby(["mixture", "n"])["accuracy"].agg(actual="mean", actual_sem="sem").reset_index()
    out = predictions.merge(actual, on=["mixture", "n"], how="left")
    out["abs_error"] = (out["predicted"] - out["actual"]).abs()
    return out


def selection_truth(market: sources.Market, mixtures: np.ndarray, n: int, seeds: int, c: float, seed: int,
                    purpose: int) -> np.ndarray:
    """Mean accuracy at size n of each given mixture, trained on full sources (seeds repeats each)."""
    table = train_sets(market, mixtures, [n], seeds, c, seed, purpose, revealed_only=False)
    return table.groupby("mixture")["accuracy"].mean().reindex(range(len(mixtures))).to_numpy()
