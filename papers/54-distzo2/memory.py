"""Memory: measured peaks of inference, MeZO and AdamW fine-tuning, and the published ZO2 table with a fit.

Measured: each method runs two steps in a freshly forked process (nothing cached by an earlier
measurement) inside ``shared.metrics.MemorySampler``: the growth of the resident set size (the
kernel's exact high-water mark, VmHWM, reset on entry) over the RSS after the model was built,
plus the exact bytes of the parameters. So "peak" = parameter bytes + everything a step adds
(activations, z, gradients, optimizer state, allocator slack). The exact tensor accounting
(parameters, gradients, optimizer state) is reported beside it.

ZO2 table: the README's GPU memory of OPT-1.3B..175B under ZO2 (data/), against a three-term
model: a constant (CUDA context, activations), the resident fp16 embeddings (token + positions),
and k fp16 decoder blocks (12 d^2 parameters each) in the device pool: fitted without 175B,
then extrapolated to it.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paper54 import mezo

METHODS = ("inference", "mezo", "adamw")
DATA = Path(__file__).parent / "data" / "opt_gpu_memory_readme_table.csv"
# OPT architectures (Zhang et al. 2022, Table 1: layers, d_model); vocabulary 50272, 2048 positions
OPT_SHAPES = {"OPT-1.3B": (24, 2048), "OPT-2.7B": (32, 2560), "OPT-6.7B": (32, 4096), "OPT-13B": (40, 5120),
              "OPT-30B": (48, 7168), "OPT-66B": (64, 9216), "OPT-175B": (96, 12288)}
OPT_VOCAB, OPT_POSITIONS, FP16 = 50272, 2050, 2


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _measure(method: str, spec_json: str, batch_size: int, seq_len: int, seed: int, lr: float) -> dict:
    import ctypes

    from shared import metrics, zoo

    torch.set_num_threads(1)
    # hand the heap this fork inherited back to the OS first: otherwise a parent that freed a lot
    # (a long test session) lends the child resident pages and its RSS growth reads too low
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    spec = zoo.ModelSpec.model_validate_json(spec_json)
    model = zoo.build(spec, seed=seed)
    (x, y), = mezo.random_batches(spec.vocab_size, 1, batch_size, seq_len, seed)
    params = mezo.indexed(model)
    cfg = mezo.ZOConfig(eps=1e-3, lr=lr, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr) if method == "adamw" else None
    model.train(method == "adamw")
    with metrics.MemorySampler() as m:
        for step in range(2):
            if method == "inference":
                with torch.no_grad():
                    mezo.lm_loss(model, x, y)
            elif method == "mezo":
                mezo.mezo_step(params, lambda: mezo.lm_loss(model, x, y), cfg, step)
            else:
                mezo.lm_loss(model, x, y).backward()
                opt.step()
                opt.zero_grad()
    param_bytes = _tensor_bytes(model.parameters())
    state = [v for s in (opt.state.values() if opt else []) for v in s.values() if torch.is_tensor(v)]
    return {"method": method, "param_bytes": param_bytes, "grad_bytes": param_bytes if opt else 0,
            "optimizer_bytes": _tensor_bytes(state), "rss_growth_bytes": m.peak_bytes - m.start_bytes,
            "peak_bytes": param_bytes + m.peak_bytes - m.start_bytes, "peak_source": m.peak_source}


def measure_peaks(spec, batch_size: int, seq_len: int, seed: int, lr: float = 1e-4) -> pd.DataFrame:
    """One row per method (inference, mezo, adamw), each measured in its own forked process (after a
    warm-up of every method here on a tiny model, so the children inherit the lazily imported code
    instead of counting its pages)."""
    from shared import zoo

    tiny = zoo.ModelSpec(**(spec.model_dump() | {"d_model": 32, "n_layers": 1, "d_ff": 64}))
    for method in METHODS:
        _measure(method, tiny.model_dump_json(), 1, 8, seed, lr)
    rows = []
    for method in METHODS:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("fork")) as pool:
            rows.append(pool.submit(_measure, method, spec.model_dump_json(), batch_size, seq_len, seed, lr).result())
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the published ZO2 table
def zo2_table() -> pd.DataFrame:
    table = pd.read_csv(DATA, comment="#")
    layers, d = zip(*(OPT_SHAPES[m] for m in table["model"]))
    table["layers"], table["d_model"] = layers, d
    table["resident_gb"] = (OPT_VOCAB + OPT_POSITIONS) * table["d_model"] * FP16 / 1e9
    table["block_gb"] = 12 * table["d_model"] ** 2 * FP16 / 1e9
    table["all_weights_gb"] = table["params_billion"] * FP16  # every fp16 weight on the GPU (what ZO2 avoids)
    return table


def fit_zo2(table: pd.DataFrame, holdout: str = "OPT-175B") -> dict:
    """Least squares of gpu_memory_gb = c0 + c_res * resident_gb + k * block_gb on every model but ``holdout``."""
    X = np.stack([np.ones(len(table)), table["resident_gb"], table["block_gb"]], 1)
    train = (table["model"] != holdout).to_numpy()
    coef, *_ = np.linalg.lstsq(X[train], table["gpu_memory_gb"].to_numpy()[train], rcond=None)
    pred = X @ coef
    y = table["gpu_memory_gb"].to_numpy()
    r2 = 1 - ((y[train] - pred[train]) ** 2).sum() / ((y[train] - y[train].mean()) ** 2).sum()
    held = int(np.flatnonzero(~train)[0])
    return {"c0_gb": float(coef[0]), "c_resident": float(coef[1]), "blocks_on_device": float(coef[2]), "r2": float(r2),
            "holdout_pred_gb": float(pred[held]), "holdout_rel_err": float(pred[held] / y[held] - 1),
            "pred": pred}
