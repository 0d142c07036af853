"""The experiments of paper 21 around :mod:`paper21.horizon`: data and config, gradient
errors against autograd, the device-memory sweep over depth, timed steps per trainer."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import torch

from paper21 import horizon
from shared import corpus, trainer, zoo
from shared.trainer import TrainConfig

TRAINERS = ("standard", "zero_offload_style", "horizon_sequential", "horizon_overlapped")


def corpus_batches(corpus_dir, p, seed: int, device: str = "cpu") -> corpus.TokenBatches:
    """Training windows of the corpus artifact (batch i depends on (seed, i) only)."""
    vocab = corpus.load_tokenizer(corpus_dir).get_vocab_size()
    if vocab > p.model.vocab_size:
        raise ValueError(f"model.vocab_size: the corpus has {vocab} token ids, the model {p.model.vocab_size}")
    return corpus.TokenBatches(corpus.load_tokens(corpus_dir, "train"), p.batch_size, p.seq_len, seed=seed, device=device)


def train_config(p, steps: int) -> TrainConfig:
    """shared.trainer's config for ``steps`` steps of this paper (its defaults otherwise)."""
    return TrainConfig(steps=steps, batch_size=p.batch_size, seq_len=p.seq_len, lr=p.lr, grad_clip=p.grad_clip,
                       log_every=max(1, steps))  # fmt: skip


def gradient_errors(model, batch, cfg: TrainConfig, device: str = "cpu") -> pd.DataFrame:
    """Per parameter tensor: the engine's gradient of one batch against the standard autograd
    backward of the whole model (max |diff| / max |autograd|)."""
    reference = copy.deepcopy(model).to(device)
    x, y = (t.to(device) for t in batch)
    trainer.training_loss(reference, x, y).backward()
    streamed = copy.deepcopy(model)
    engine = horizon.HorizonEngine(streamed, cfg, device=device, overlap=False)
    engine.step(x, y, 0, update=False)
    engine.close()
    rows = []
    for (name, a), b in zip(reference.named_parameters(), streamed.parameters()):
        ga, gb = a.grad.detach().cpu(), b.grad
        scale = float(ga.abs().max())
        err = float((ga - gb).abs().max())
        rows.append({"param": name, "numel": a.numel(), "max_abs_grad": scale, "max_abs_err": err,
                     "rel_err": err / scale if scale > 0 else err})  # fmt: skip
    return pd.DataFrame(rows)


def max_abs_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((pa.detach().cpu() - pb.detach().cpu()).abs().max()) for pa, pb in zip(a.parameters(), b.parameters()))


def _cuda_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(device: str) -> float:
    """torch.cuda.max_memory_allocated since the last reset (NaN on a CPU)."""
    if not device.startswith("cuda"):
        return math.nan
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated())


def memory_row(p, depth: int, batches, *, seed: int, device: str = "cpu") -> list[dict]:
    """Device and host bytes of the standard trainer, the ZeRO-Offload-style trainer and the
    engine (checkpoints on the host and on the device) at ``depth`` layers."""
    spec = zoo.ModelSpec(**(p.model.model_dump() | {"n_layers": depth}))
    counts = zoo.param_counts(spec)
    cfg = train_config(p, p.memory_steps)
    x, y = (t.to(device) for t in batches[0])
    base = {"depth": depth, "params": counts["total"]}

    _cuda_reset(device)
    resident = zoo.build(spec, seed=seed).to(device)
    std = horizon.standard_device_bytes(resident, x, y, cfg)
    std_cuda = _cuda_peak(device)
    del resident
    rows = [
        base | {"trainer": "standard", "device_bytes": sum(std.values()), "cuda_peak_bytes": std_cuda,
                "host_bytes": 0} | {f"device_{k}": v for k, v in std.items()},  # fmt: skip
        base | {"trainer": "zero_offload_style", "device_bytes": std["params"] + std["grads"] + std["activations"],
                "cuda_peak_bytes": math.nan, "host_bytes": std["params"] + std["grads"] + std["optimizer"]},
    ]  # fmt: skip
    for where in ("host", "device"):
        _cuda_reset(device)
        engine_model = zoo.build(spec, seed=seed)  # on the host
        engine = horizon.HorizonEngine(engine_model, cfg, device=device, checkpoints=where, overlap=False)
        horizon.run_steps(engine, batches, p.memory_steps)
        engine.close()
        host = engine.host_ledger
        rows.append(base | {
            "trainer": f"horizon_ckpt_{where}", "device_bytes": engine.device_ledger.peak,
            "cuda_peak_bytes": _cuda_peak(device), "host_bytes": host.peak,
            "host_grad_bytes": host.peak_parts.get("grads", 0), "host_checkpoint_bytes": host.peak_parts.get("checkpoints", 0),
            "host_state_bytes": host.peak - host.peak_parts.get("checkpoints", 0),
        } | {f"device_{k}": v for k, v in engine.device_ledger.peak_parts.items()})  # fmt: skip
        del engine, engine_model
    return rows


def depth_summary(table: pd.DataFrame, engine: str = "horizon_ckpt_host") -> dict:
    """The numbers the memory claims read from the sweep."""
    std = table[table["trainer"] == "standard"].sort_values("depth")
    eng = table[table["trainer"] == engine].sort_values("depth")
    slope, intercept = np.polyfit(std["depth"], std["device_bytes"], 1)
    fitted = slope * std["depth"] + intercept
    r2 = 1 - float(((std["device_bytes"] - fitted) ** 2).sum() / ((std["device_bytes"] - std["device_bytes"].mean()) ** 2).sum())
    per_layer_params = float(np.polyfit(std["depth"], std["params"], 1)[0])
    deepest = int(std["depth"].max())
    return {
        "engine_peak_ratio_deep_shallow": float(eng["device_bytes"].iloc[-1] / eng["device_bytes"].iloc[0]),
        "standard_peak_ratio_deep_shallow": float(std["device_bytes"].iloc[-1] / std["device_bytes"].iloc[0]),
        "standard_linear_r2": r2,
        "standard_bytes_per_layer": float(slope),
        # each added layer costs the standard trainer its fp32 state (params, grads, m, v: 16 B/param) and more
        "standard_bytes_per_layer_over_state": float(slope / (16 * per_layer_params)),
        "standard_over_engine_at_deepest": float(std["device_bytes"].iloc[-1] / eng["device_bytes"].iloc[-1]),
        "deepest": deepest,
    }


def host_summary(table: pd.DataFrame, host_ram_tb: float, engine: str = "horizon_ckpt_host") -> dict:
    """Host bytes per parameter of the engine's state (parameters, AdamW moments, the gradient
    slab at its peak; checkpoints apart) at the deepest model, and the parameter count that the
    paper's host RAM would hold at that rate."""
    eng = table[table["trainer"] == engine].sort_values("depth").iloc[-1]
    per_param = float(eng["host_state_bytes"] / eng["params"])
    return {
        "host_state_bytes_per_param": per_param,
        "host_checkpoint_bytes_per_param": float(eng["host_checkpoint_bytes"] / eng["params"]),
        "host_grad_slab_share": float(eng["host_grad_bytes"] / eng["host_state_bytes"]),
        "projected_max_params_b": host_ram_tb * 1e12 / per_param / 1e9,
    }


def make_trainer(kind: str, model, cfg: TrainConfig, device: str, checkpoints: str):
    """One of TRAINERS around ``model`` (``standard``: shared.trainer's step, resident AdamW)."""
    if kind == "standard":
        return _Standard(model.to(device), cfg, device)
    if kind == "zero_offload_style":
        return horizon.OffloadTrainer(model, cfg, device=device)
    overlap = kind == "horizon_overlapped"
    return horizon.HorizonEngine(model, cfg, device=device, checkpoints=checkpoints, overlap=overlap)


class _Standard:
    """The standard trainer's step (shared.trainer: loss, backward, AdamW on the device), one call per step."""

    def __init__(self, model, cfg: TrainConfig, device: str):
        self.model, self.cfg, self.device = model, cfg, device
        self.optimizer = trainer._adamw(model, cfg, device)
        self.times: dict[str, float] = {}

    def step(self, x, y, step: int) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * trainer.lr_multiplier(step, self.cfg)
        loss = trainer.training_loss(self.model, x.to(self.device), y.to(self.device))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def time_trainers(p, batches, *, seed: int, device: str = "cpu", progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Median step time of each trainer (``throughput_warmup`` untimed steps first) and the
    per-phase seconds per step of the engine and the offload trainer."""
    cfg = train_config(p, p.throughput_warmup + p.throughput_steps)
    tokens = p.batch_size * p.seq_len
    rows, phases = [], []
    kinds = progress(TRAINERS, desc="trainers") if progress else TRAINERS
    for kind in kinds:
        obj = make_trainer(kind, zoo.build(p.model, seed=seed), cfg, device, p.checkpoints)
        seconds = []
        for s in range(p.throughput_warmup + p.throughput_steps):
            if s == p.throughput_warmup:
                obj.times.clear()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            obj.step(*batches[s], s)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if s >= p.throughput_warmup:
                seconds.append(time.perf_counter() - start)
        if hasattr(obj, "close"):
            obj.close()
        median = float(np.median(seconds))
        rows.append({"trainer": kind, "step_s": median, "tokens_per_s": tokens / median})
        phases += [{"trainer": kind, "phase": k, "s_per_step": v / p.throughput_steps} for k, v in obj.times.items()]
    return pd.DataFrame(rows), pd.DataFrame(phases, columns=["trainer", "phase", "s_per_step"])
