"""shared.trainer.train against a bare PyTorch training loop: tokens per second.

The goal (issue 3): the trainer's conveniences (learning-rate schedule, autocast context,
losses kept on the device and read back every log_every steps, history, progress bar,
batch fetch) cost at most 20 % of the throughput of the loop one would write by hand. Both
train the same zoo model (a Llama, gqa attention) on the same fixed batch with the same
math: forward, float32 cross-entropy of the logits, backward, gradient clipping, fused
AdamW step. Each sample is one call of `steps` optimizer steps including the optimizer's
creation (both pay it), interleaved with shared.timing, one thread, median. Calls are kept
short and many, so that a busy phase of a shared machine hits both loops alike; each case
is reported twice, by wall-clock and by the process's CPU time (with one thread, the work
itself: on a machine shared with other jobs the wall-clock ratio swings by +-10 %).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F

from shared.timing import benchmark

SMOKE = dict(d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, d_ff=176, vocab_size=2048)
FIVE_M = dict(d_model=256, n_layers=6, n_heads=8, n_kv_heads=2, d_ff=688, vocab_size=4096)
# (label, ModelSpec fields, batch size, seq len, steps per timed call, repeats)
CASES = [("smoke (d=64, 2 layers)", SMOKE, 8, 128, 10, 25), ("5M (d=256, 6 layers)", FIVE_M, 8, 128, 3, 9)]
LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, (0.9, 0.95), 0.1, 1.0
WARMUP = 1  # untimed rounds


def bare_loop(model, x, y, steps):
    """What one writes by hand: no schedule, no logging, no progress bar."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, fused=True)
    for _ in range(steps):
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _cpu_timed(fn, samples: list[float]):
    """fn, also recording the process CPU seconds of each call (one thread: the work done, which
    other processes on a shared machine do not inflate the way they inflate wall-clock time)."""

    def timed():
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)

    return timed


def run() -> list[dict]:
    from tqdm import tqdm

    from shared import trainer, zoo

    records = []
    devnull = open(os.devnull, "w")  # the bar is drawn (its cost counts), just not shown

    def progress(iterable, desc="", total=None):
        return tqdm(iterable, desc=desc, total=total, mininterval=0.5, file=devnull)

    for label, fields, batch, seq, steps, repeats in CASES:
        spec = zoo.ModelSpec(attention="gqa", max_seq_len=seq, **fields)
        ours_model, bare_model = zoo.build(spec, seed=0).train(), zoo.build(spec, seed=0).train()
        gen = torch.Generator().manual_seed(0)
        window = torch.randint(0, spec.vocab_size, (batch, seq + 1), generator=gen)
        x, y = window[:, :-1].contiguous(), window[:, 1:].contiguous()
        cfg = trainer.TrainConfig(
            steps=steps, batch_size=batch, seq_len=seq, lr=LR, warmup_steps=1, beta1=BETAS[0], beta2=BETAS[1],
            weight_decay=WEIGHT_DECAY, grad_clip=CLIP,
        )
        cpu_seconds = {"ours": [], "bare": []}

        def ours():
            trainer.train(ours_model, lambda step: (x, y), cfg, device="cpu", progress=progress)

        def bare():
            bare_loop(bare_model, x, y, steps)

        fns = {"ours": _cpu_timed(ours, cpu_seconds["ours"]), "bare": _cpu_timed(bare, cpu_seconds["bare"])}
        stats = benchmark(fns, repeats=repeats, warmup=WARMUP, num_threads=1)
        tokens = steps * batch * seq
        params = sum(p.numel() for p in ours_model.parameters()) / 1e6
        cpu = {k: statistics.median(v[WARMUP:]) for k, v in cpu_seconds.items()}
        for clock, ours_s, bare_s in (("wall-clock", stats["ours"].median_s, stats["bare"].median_s),
                                      ("CPU time", cpu["ours"], cpu["bare"])):
            records.append(
                {
                    "name": f"trainer.train tokens/s ({clock}), {label}, {params:.1f}M params, {batch}x{seq}, 1 thread",
                    "ours": tokens / ours_s,
                    "peer": "bare PyTorch loop (same model, batch, fused AdamW, clip)",
                    "peer_value": tokens / bare_s,
                    "unit": "tokens/s",
                    "lower_is_better": False,
                }
            )
    devnull.close()
    return records
