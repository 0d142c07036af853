"""DistZO2 on real processes: perturbation parallelism (PertP), DDP on the scalar gradient, and 2D.

A world of ``pert x data`` ranks (``pert`` in {1, 2}): rank r has the perturbation role
r % pert (with pert = 2: role 0 evaluates L(θ + εz), role 1 L(θ - εz); with pert = 1 both) and the
data shard r // pert of the step's batch (the batch split into ``data`` equal row blocks). Every
rank holds the whole model and draws the same z from the shared seed; the only message of a step
is the vector of 2·data float64 losses (each rank fills its own slots, the rest zeros, summed by
one all-reduce: 16·data bytes), from which every rank computes the same g (mezo.zo_grad) and
applies the same update. So:

- PertP (pert=2, data=1): two ranks, one forward each, scalars exchanged; parameters
  bit-identical to serial MeZO (each rank replays the serial sequence of in-place additions,
  mezo.SEQUENCE, but runs only its own forward).
- DDP (pert=1, data=w): each rank both forwards on its shard; the all-reduce carries g's
  ingredients, never a gradient tensor; equal to serial MeZO on the concatenated batch up to
  float rounding of the per-shard means.
- 2D (pert=2, data=2): four ranks, one forward on a quarter of the work each.

Launched by ``shared.distributed.spawn`` here (gloo, 1 thread per rank), or under torchrun on
GPUs or nodes: ``torchrun ... papers/54-distzo2/launch.py`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from paper54 import mezo
from shared import distributed

STRATEGIES = {"serial": (1, 1), "pertp": (2, 1), "ddp": (1, 2), "2d": (2, 2)}


@dataclass(frozen=True)
class Layout:
    pert: int  # 1 or 2 ranks per perturbation pair
    data: int  # data-parallel shards

    def __post_init__(self):
        if self.pert not in (1, 2):
            raise ValueError(f"pert: must be 1 or 2, got {self.pert}")
        if self.data < 1:
            raise ValueError(f"data: must be >= 1, got {self.data}")

    @property
    def world(self) -> int:
        return self.pert * self.data

    @classmethod
    def of(cls, strategy: str, data: int | None = None) -> Layout:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy: {strategy!r} is not allowed; allowed: {', '.join(STRATEGIES)}")
        pert, d = STRATEGIES[strategy]
        return cls(pert, data if (data is not None and strategy in ("ddp", "2d")) else d)


def shard(x: torch.Tensor, index: int, count: int) -> torch.Tensor:
    if x.shape[0] % count:
        raise ValueError(f"batch: {x.shape[0]} rows do not split into {count} equal data shards")
    n = x.shape[0] // count
    return x[index * n:(index + 1) * n]


def zo_step(params, model, x, y, cfg: mezo.ZOConfig, step: int, layout: Layout, rank: int,
            link: distributed.Link | None = None) -> tuple[list[float], list[float], float, float]:
    """One distributed ZO step on this rank; returns (L+ per shard, L- per shard, g, exchange seconds)."""
    role, d = rank % layout.pert, rank // layout.pert
    xs, ys = shard(x, d, layout.data), shard(y, d, layout.data)
    losses = torch.zeros(2 * layout.data, dtype=torch.float64)
    eps = cfg.eps
    with torch.no_grad():
        if layout.pert == 1:  # both forwards here (serial MeZO on this shard)
            mezo.apply(params, cfg.seed, step, [eps])
            losses[2 * d] = float(mezo.lm_loss(model, xs, ys))
            mezo.apply(params, cfg.seed, step, [-2 * eps])
            losses[2 * d + 1] = float(mezo.lm_loss(model, xs, ys))
            after = [eps]
        elif role == 0:  # θ + εz
            mezo.apply(params, cfg.seed, step, [eps])
            losses[2 * d] = float(mezo.lm_loss(model, xs, ys))
            after = [-2 * eps, eps]
        else:  # θ - εz, reached by the serial run's own two additions
            mezo.apply(params, cfg.seed, step, [eps, -2 * eps])
            losses[2 * d + 1] = float(mezo.lm_loss(model, xs, ys))
            after = [eps]
        started = time.perf_counter()
        if layout.world > 1:
            distributed.all_reduce(losses, "sum", link=link)
        exchange = time.perf_counter() - started
        lp, lm = losses[0::2].tolist(), losses[1::2].tolist()
        g = mezo.zo_grad(lp, lm, eps)
        mezo.apply(params, cfg.seed, step, after + [-cfg.lr * g])  # restore θ, then the update
    return lp, lm, g, exchange


def worker(make_model, batches, cfg: mezo.ZOConfig, steps: int, layout: Layout, link: distributed.Link | None = None,
           warmup: int = 1) -> dict:
    """Runs in every rank (process group up): ``steps`` ZO steps of ``layout``; rank 0 returns the history,
    step times and final parameters (a flat tensor); every rank returns a checksum of its parameters."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world != layout.world:
        raise ValueError(f"layout: pert {layout.pert} x data {layout.data} needs {layout.world} ranks, got {world}")
    model = make_model()
    params = mezo.indexed(model)
    history, times, exchange = [], [], []
    for t in range(steps):
        x, y = batches[t % len(batches)]
        if world > 1 and t == warmup:
            dist.barrier()
        started = time.perf_counter()
        lp, lm, g, ex = zo_step(params, model, x, y, cfg, t, layout, rank, link)
        times.append(time.perf_counter() - started)
        exchange.append(ex)
        history.append({"step": t, "loss_plus": sum(lp) / len(lp), "loss_minus": sum(lm) / len(lm), "g": g})
    out = {"rank": rank, "checksum": float(mezo.flat(model).double().sum())}
    if rank == 0:
        timed = times[warmup:] or times
        out |= {"history": history, "params": mezo.flat(model), "step_s": sum(timed) / len(timed),
                "exchange_s": sum(exchange[warmup:] or exchange) / len(timed)}
    return out


def run(strategy: str, make_model, batches, cfg: mezo.ZOConfig, steps: int, data: int | None = None,
        link: distributed.Link | None = None, warmup: int = 1) -> dict:
    """One strategy end to end: serial in this process, the others on ``spawn``ed gloo ranks.
    Returns rank 0's result plus ``ranks_agree`` (every rank ended with the same parameters)."""
    layout = Layout.of(strategy, data)
    if layout.world == 1:
        results = [worker(make_model, batches, cfg, steps, layout, link, warmup)]
    else:
        results = distributed.spawn(worker, layout.world, args=(make_model, batches, cfg, steps, layout, link, warmup))
    sums = [r["checksum"] for r in results]
    return results[0] | {"world": layout.world, "ranks_agree": all(s == sums[0] for s in sums)}


def exchanged_bytes(layout: Layout) -> int:
    """Bytes each rank contributes to a step's one all-reduce (float64 losses)."""
    return 0 if layout.world == 1 else 2 * layout.data * 8


def modelled_step_s(strategy: str, forward_s: float, noise_s: float, exchange_s: float, data: int = 2) -> float:
    """Step time of a strategy from measured parts: ``forward_s`` one forward of the whole batch,
    ``noise_s`` one regeneration + addition pass of z over the model, ``exchange_s`` one scalar all-reduce.
    Serial: 2 forwards + 3 noise passes; PertP: 1 forward + 2; DDP: 2 forwards of 1/data + 3; 2D: 1 of 1/data + 2."""
    pert, d = Layout.of(strategy, data).pert, Layout.of(strategy, data).data
    forwards = (2 if pert == 1 else 1) * forward_s / d
    passes = 3 if pert == 1 else 2
    return forwards + passes * noise_s + (exchange_s if pert * d > 1 else 0.0)


# ---------------------------------------------------------------- torchrun entry point
def main(argv=None):
    ap = argparse.ArgumentParser(prog="papers/54-distzo2/launch.py", description=(
        "DistZO2 across GPUs or nodes: torchrun --nproc-per-node=2 papers/54-distzo2/launch.py --strategy pertp "
        "(the same worker as the notebooks; random-init zoo model, random tokens)."))
    ap.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "serial"], default="pertp")
    ap.add_argument("--data", type=int, default=None, help="data shards (ddp: world size; 2d: world / 2)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eps", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    from shared import zoo

    world = int(os.environ.get("WORLD_SIZE", "1"))
    data = args.data or (world // STRATEGIES[args.strategy][0])
    layout = Layout.of(args.strategy, data)
    spec = zoo.ModelSpec(attention="mha", vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                         n_heads=max(args.d_model // 64, 1), d_ff=int(args.d_model * 8 / 3) // 16 * 16,
                         max_seq_len=args.seq)  # heads of 64 dims

    def make_model():
        device = f"cuda:{torch.cuda.current_device()}" if args.device == "cuda" else "cpu"
        return zoo.build(spec, seed=args.seed).to(device).eval()

    dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else "cpu"
    batches = mezo.random_batches(args.vocab, 4, args.batch, args.seq, args.seed, device=dev)
    cfg = mezo.ZOConfig(eps=args.eps, lr=args.lr, seed=args.seed)
    out = distributed.run_under_torchrun(worker, (make_model, batches, cfg, args.steps, layout), device=args.device)
    if out["rank"] == 0:
        h = out["history"]
        print(f"{args.strategy} pert={layout.pert} data={layout.data}: {1 / out['step_s']:.2f} steps/s, "
              f"loss {h[0]['loss_plus']:.4f} -> {h[-1]['loss_plus']:.4f}, exchange {out['exchange_s'] * 1e3:.2f} ms/step")
    return out

