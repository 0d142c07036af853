"""Measured step times of the two schedules (and of swap plans) next to the cost model's.

Every comparison runs its set-ups in lockstep (``offload.lockstep``): the profile of the cost
model and the measured schedules advance one step each in turn, so the load of a shared
machine, which drifts, hits them alike."""

from __future__ import annotations

import pandas as pd

from . import costmodel, offload


def model_and_batches(p, corpus_dir, seed: int, device: str):
    """The paper's model (``p.model`` with the corpus tokenizer's vocabulary, random init) on
    ``device`` and the corpus training batches of ``p.train``."""
    from shared import corpus, zoo

    vocab, batches, _ = corpus.training_data(corpus_dir, p.train.batch_size, p.train.seq_len, 1, seed=seed)
    spec = p.model.model_copy(update={"vocab_size": vocab})
    return spec, zoo.build(spec, seed=seed).to(device), batches


def sweep(model, batches, cfg, folder, real_bytes_per_s: float, *, bandwidths, latency_ms, prefetch, steps, warmup,
          progress=None) -> pd.DataFrame:
    """Per emulated bandwidth (None: the real device), everything swapped: each schedule's
    median step time and the model's prediction from a profile taken in the same lockstep."""
    rows = []
    n = len(offload.chunks(model))
    state_bytes = tuple(c.state_bytes for c in offload.chunks(model))
    drop = max(warmup, 1)
    for bw in (progress(bandwidths, desc="bandwidth sweep", total=len(bandwidths)) if progress else bandwidths):
        setups = costmodel.profile_setups(n) + [
            {"schedule": s, "bandwidth_mb_s": bw, "latency_ms": latency_ms, "prefetch": prefetch} for s in offload.SCHEDULES
        ]
        memory, swapped, *timed = offload.lockstep(model, batches, cfg, folder, setups, steps=drop + steps)
        prof = costmodel.from_rows(memory.iloc[drop:], swapped.iloc[drop:], state_bytes, real_bytes_per_s)
        disk = costmodel.DiskModel(bw, latency_ms, real_bytes_per_s)
        for schedule, table in zip(offload.SCHEDULES, timed):
            table = table.iloc[drop:]
            rows.append({
                "bandwidth_mb_s": bw, "schedule": schedule, "measured_s": float(table["step_s"].median()),
                "predicted_s": costmodel.predict(prof, disk, schedule, (), prefetch),
                "forward_s": float(table["forward_s"].median()), "backward_s": float(table["backward_s"].median()),
                "profiled_forward_s": prof.forward_s, "profiled_backward_s": prof.backward_s,
                "overlap_extra_s": prof.overlap_forward_extra_s + prof.overlap_backward_extra_s,
                "io_s": 2 * sum(disk.seconds(b) for b in prof.state_bytes), "adam_s": sum(prof.adam_s),
            })
    table = pd.DataFrame(rows)
    table["model_error"] = (table["predicted_s"] - table["measured_s"]).abs() / table["measured_s"]
    return table


def balance_bandwidth(prof: costmodel.Profile, latency_ms: float) -> float:
    """The emulated bandwidth (MB/s) at which I/O + Adam of a step equals the backward time."""
    nbytes = 2 * sum(prof.state_bytes)
    io_budget = prof.backward_s - sum(prof.adam_s) - 2 * len(prof.state_bytes) * latency_ms / 1e3
    if io_budget <= 0:
        raise ValueError("latency_ms: Adam and the latencies alone exceed the backward time; lower latency_ms")
    return nbytes / io_budget / 1e6


def compare_plans(model, batches, cfg, folder, prof: costmodel.Profile, disk: costmodel.DiskModel, budget_bytes: float, *,
                  prefetch, steps, warmup, progress=None) -> pd.DataFrame:
    """The cost model's resident set against simple ones within the same budget, measured in
    lockstep (overlapped schedule). One row per distinct plan; ``chosen`` marks the model's."""
    n = len(prof.state_bytes)
    chosen, _ = costmodel.best_plan(prof, disk, budget_bytes, prefetch)
    candidates = {
        "swap everything": (),
        "keep first-updated": costmodel.fill_in_order(prof, budget_bytes, range(n)),
        "keep last-updated": costmodel.fill_in_order(prof, budget_bytes, reversed(range(n))),
        "cost model": chosen,
    }
    plans: dict[tuple[int, ...], list[str]] = {}
    for name, plan in candidates.items():
        plans.setdefault(plan, []).append(name)
    setups = [{"schedule": "overlapped", "bandwidth_mb_s": disk.bandwidth_mb_s, "latency_ms": disk.latency_ms,
               "resident": plan, "prefetch": prefetch} for plan in plans]
    timed = offload.lockstep(model, batches, cfg, folder, setups, steps=warmup + steps, progress=progress)
    rows = []
    for (plan, names), table in zip(plans.items(), timed):
        rows.append({
            "plan": " = ".join(names), "resident": " ".join(map(str, plan)) or "-", "chosen": plan == chosen,
            "resident_bytes": sum(prof.state_bytes[k] for k in plan),
            "predicted_s": costmodel.predict(prof, disk, "overlapped", plan, prefetch),
            "measured_s": float(table.iloc[warmup:]["step_s"].median()),
        })
    return pd.DataFrame(rows)
