"""CO2 and its baselines as real multi-process training (torch.distributed), one worker per rank.

Four algorithms, each rank training a copy of the same tiny Llama on its own disjoint shard of
the corpus, with its own inner optimizer (AdamW or SGD; optimizer states stay local):

    ddp     all-reduce (mean) of the flattened gradients after every backward, blocking
    local   Local-SGD/AdamW: tau local steps, then a blocking all-reduce (mean) of the parameters
    slowmo  tau local steps, blocking average, outer momentum (SlowMo, Wang et al. 2020)
    co2     tau local steps; the average of this round's parameters is launched asynchronously
            (``async_op=True``) and runs while the next tau local steps compute; the outer update
            uses the average of the previous round (one round stale), the staleness-gap penalty
            lambda and outer-momentum clipping phi

The outer update (:func:`outer_update`), with anchor ``a``, pseudo-gradient ``d``, momentum ``m``:

    m <- beta * m + d / lambda
    m <- clamp(m, -phi, phi)          (phi = inf: no clipping)
    a <- a - alpha * m ;   the rank's parameters <- a

slowmo: ``d = a - mean_i x^i`` (this round's average, fresh; the anchor is the same on every rank).
co2 (:func:`co2_round`, ``reference="live"``, the default): the parameters that are averaged are
the live ones: at the end of round t a rank waits for the average of what the ranks launched at
the end of round t-1 (one round stale), puts it in place of its own launched copy and keeps the
progress it made since (``x <- x - sent + mean(sent)``), applies the outer update to that with its
anchor (``d = a - x``), sets its parameters to the new anchor and launches their average
(``async_op=True``), which the next tau steps hide. Averaged over the ranks this is SlowMo's update
on the fresh average (the rule is linear), so no round's progress is lost; each rank's own anchor
differs from the mean by its last round's deviation, which the next arrival removes. This is the
data flow of the released code (weigao266/fairscale-CO2, gossip/co2.py: the outer step on the live
parameters against ``old_params``, then an all-reduce of the live parameters in a background
thread), without its in-place race. The two earlier readings stay as named options for comparison:
``reference="current"`` (``d = a_t - mean_i x_{t-1}^i``: with alpha = lambda = 1, beta = 0 the anchor
is reset to the stale average, so the runs form two interleaved chains and a round's progress can
be lost: tests/papers/test_p47_co2.py pins it) and ``reference="own"`` (``d = a_{t-1} - mean_i
x_{t-1}^i``: every round's progress enters once, one round late, from a point that lacks it). After
the last round the last average is applied (the final model is the same on every rank).

Communication goes through :func:`shared.distributed.all_reduce` with an emulated
:class:`~shared.distributed.Link`: the real gloo/nccl collective, never faster than the α-β
model; ``Pending.exposed_s`` is the communication time the computation did not hide.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.utils import parameters_to_vector

from shared import distributed, trainer, zoo
from shared.corpus import TokenBatches, eval_batches
from shared.distributed import Link

KINDS = ("ddp", "local", "slowmo", "co2")
INNER = ("adamw", "sgd")
REFERENCES = ("live", "current", "own")  # co2's outer update: the paper's data flow first (co2_round)


@dataclass(frozen=True)
class Algo:
    """One training algorithm and its hyper-parameters."""

    kind: str
    tau: int = 1  # local steps per round (ddp: 1)
    outer_lr: float = 1.0  # alpha
    outer_momentum: float = 0.0  # beta
    gap_penalty: float = 1.0  # lambda (co2)
    clip: float = math.inf  # phi (co2); inf: no clipping
    label: str = ""
    reference: str = "live"  # co2: see REFERENCES and co2_round

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Algo.kind={self.kind!r} is not allowed; allowed: {', '.join(KINDS)}")
        if self.tau < 1 or (self.kind == "ddp" and self.tau != 1):
            raise ValueError(f"Algo.tau: must be >= 1 (ddp: 1), got {self.tau} for {self.kind}")
        if not self.gap_penalty > 0:
            raise ValueError(f"Algo.gap_penalty: must be > 0, got {self.gap_penalty}")
        if self.reference not in REFERENCES:
            raise ValueError(f"Algo.reference={self.reference!r} is not allowed; allowed: {', '.join(REFERENCES)}")
        if not self.clip > 0:
            raise ValueError(f"Algo.clip: must be > 0 (inf: no clipping), got {self.clip}")

    @property
    def name(self) -> str:
        return self.label or self.kind


@dataclass(frozen=True)
class RunSpec:
    """Everything one rank needs to train (the same on every rank)."""

    model: zoo.ModelSpec
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    warmup_steps: int = 0
    inner: str = "adamw"
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 0  # snapshot the global model every this many steps (a multiple of tau); 0: end only
    eval_batches: int = 4
    seed: int = 0
    record: bool = False  # return every round's local and averaged parameters (tests)

    def __post_init__(self):
        if self.inner not in INNER:
            raise ValueError(f"RunSpec.inner={self.inner!r} is not allowed; allowed: {', '.join(INNER)}")


# ----------------------------------------------------------------- the outer update (pure)
def outer_update(anchor: torch.Tensor, pseudo_grad: torch.Tensor, momentum: torch.Tensor, *, beta: float,
                 gap_penalty: float = 1.0, clip: float = math.inf, lr: float = 1.0):
    """(new anchor, new momentum): m = beta m + d / lambda, clamped to [-phi, phi]; a = a - lr m.

    Unlike the released code (``torch.clamp`` without assignment, a no-op), the clamp is applied.
    """
    m = momentum * beta + pseudo_grad / gap_penalty
    if math.isfinite(clip):
        m = m.clamp(-clip, clip)
    return anchor - lr * m, m


@dataclass
class OuterState:
    """One rank's CO2 state between rounds."""

    anchor: torch.Tensor
    momentum: torch.Tensor
    sent: torch.Tensor | None = None  # live: what this rank launched at the end of the last round
    prev_anchor: torch.Tensor | None = None  # own: the anchor of the round whose average is in flight


def co2_round(algo: Algo, state: OuterState, local: torch.Tensor, arrived: torch.Tensor | None):
    """One CO2 round boundary on one rank (pure): ``local`` = its parameters after the round's tau
    steps, ``arrived`` = the average launched at the end of the previous round (None after the
    first). Returns (parameters to continue from, tensor to launch the average of); ``state`` is
    updated in place. See the module docstring for the three references."""
    kw = dict(beta=algo.outer_momentum, gap_penalty=algo.gap_penalty, clip=algo.clip, lr=algo.outer_lr)
    if algo.reference == "live":
        x = local if arrived is None else local - state.sent + arrived
        state.anchor, state.momentum = outer_update(state.anchor, state.anchor - x, state.momentum, **kw)
        state.sent = state.anchor.clone()
        return state.anchor, state.sent
    anchor = state.anchor
    if arrived is not None:
        ref = anchor if algo.reference == "current" else state.prev_anchor
        state.anchor, state.momentum = outer_update(anchor, ref - arrived, state.momentum, **kw)
    state.prev_anchor = anchor
    return state.anchor, local


def co2_drain(algo: Algo, state: OuterState, local: torch.Tensor, arrived: torch.Tensor) -> torch.Tensor:
    """After the last round: apply the last average (live: in place of the launched copy, which
    ``local`` still equals; current/own: one more outer update). Returns the final parameters."""
    if algo.reference == "live":
        return local - state.sent + arrived
    ref = state.anchor if algo.reference == "current" else state.prev_anchor
    state.anchor, state.momentum = outer_update(state.anchor, ref - arrived, state.momentum, beta=algo.outer_momentum,
                                                gap_penalty=algo.gap_penalty, clip=algo.clip, lr=algo.outer_lr)
    return state.anchor


def overlap_exposed_fraction(kind: str, ratio: float, tau: int) -> float:
    """Share of the wall-clock spent waiting on the link, by the overlap model.

    ``ratio`` = T_allreduce / T_compute of one step. ddp: one exposed all-reduce per step;
    local/slowmo: one per tau steps; co2: the part of one all-reduce that tau steps of compute
    cannot hide, max(0, T_ar - tau T_comp), per tau steps."""
    if kind == "ddp":
        exposed, compute = ratio, 1.0
    elif kind in ("local", "slowmo"):
        exposed, compute = ratio, float(tau)
    elif kind == "co2":
        exposed, compute = max(0.0, ratio - tau), float(tau)
    else:
        raise ValueError(f"kind={kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    return exposed / (exposed + compute)


def time_to_target(seconds, losses, target: float) -> float:
    """First wall-clock time the loss curve reaches ``target`` (linear interpolation); inf if never."""
    seconds, losses = np.asarray(seconds, float), np.asarray(losses, float)
    hit = np.nonzero(losses <= target)[0]
    if len(hit) == 0:
        return math.inf
    i = hit[0]
    if i == 0:
        return float(seconds[0])
    s0, s1, l0, l1 = seconds[i - 1], seconds[i], losses[i - 1], losses[i]
    return float(s0 + (s1 - s0) * (l0 - target) / (l0 - l1))


def link_for_ratio(ratio: float, compute_s: float, nbytes: int, world_size: int, latency_s: float = 0.0) -> Link:
    """The link whose ring all-reduce of ``nbytes`` takes ``ratio`` x ``compute_s``."""
    target = ratio * compute_s
    steps = 2 * (world_size - 1)
    wire = target - steps * latency_s
    if wire <= 0:
        raise ValueError(f"latency_s={latency_s}: {steps} latencies alone exceed the target all-reduce time {target:.4g} s")
    return Link(bandwidth=steps / world_size * nbytes / wire, latency_s=latency_s)


# ----------------------------------------------------------------- one rank's training
def shard(tokens: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s contiguous, disjoint share of the token stream."""
    n = len(tokens)
    return tokens[rank * n // world_size:(rank + 1) * n // world_size]


def _optimizer(model, spec: RunSpec):
    if spec.inner == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, 0.95), eps=1e-8)


def _schedule(spec: RunSpec) -> trainer.TrainConfig:
    return trainer.TrainConfig(steps=spec.steps, batch_size=spec.batch_size, seq_len=spec.seq_len, lr=spec.lr,
                               warmup_steps=spec.warmup_steps, schedule="cosine")


@dataclass
class _Clock:
    """Wall-clock of one rank's training, without the (cheap) snapshots of the global model."""

    start: float = field(default_factory=time.perf_counter)
    paused: float = 0.0
    compute: float = 0.0
    exposed: float = 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.paused


def _local_step(model, opt, batches, step, spec, sched):
    t0 = time.perf_counter()
    x, y = batches[step]
    lr = spec.lr * trainer.lr_multiplier(step, sched)
    for group in opt.param_groups:
        group["lr"] = lr
    loss = trainer.cross_entropy(model, x, y)
    loss.backward()
    return loss, t0, lr


def _finish_step(model, opt, spec):
    if spec.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if torch.device(spec_device(model)).type == "cuda":
        torch.cuda.synchronize()  # the step's time is the step's, not the next one's


def spec_device(model) -> torch.device:
    return next(model.parameters()).device


def train_rank(algo: Algo, spec: RunSpec, train_tokens: np.ndarray, val_tokens: np.ndarray,
               link: Link | None = None, device: str = "cpu") -> dict:
    """Train one rank (call inside a process group); returns its history and timing.

    The global model (DDP: the model; others: the anchor, co2 live: the mean of the ranks' anchors)
    is snapshotted every ``eval_every`` steps and evaluated after training, so evaluation never
    hides communication."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(spec.seed)
    model = zoo.build(spec.model, seed=spec.seed).to(device)
    model.train()
    opt = _optimizer(model, spec)
    sched = _schedule(spec)
    batches = TokenBatches(shard(train_tokens, rank, world), spec.batch_size, spec.seq_len,
                           seed=spec.seed + 1000 * (rank + 1), device=device)
    params = list(model.parameters())
    anchor = parameters_to_vector(params).detach().clone()
    state = OuterState(anchor=anchor, momentum=torch.zeros_like(anchor))  # slowmo and co2
    pending = None
    eval_every = spec.eval_every or spec.steps
    if spec.steps % algo.tau or eval_every % algo.tau:
        raise ValueError(f"steps={spec.steps} and eval_every={eval_every} must be multiples of tau={algo.tau}")
    snapshots, rows, rounds = [], [], []
    clock = _Clock()

    def snapshot(step: int):
        t = time.perf_counter()
        snapshots.append((step, clock.now(), parameters_to_vector(params).detach().clone()))
        clock.paused += time.perf_counter() - t

    def set_params(vec):
        _assign(vec, params)

    snapshot(0)
    for step in range(spec.steps):
        loss, t0, lr = _local_step(model, opt, batches, step, spec, sched)
        if algo.kind == "ddp":
            grads = parameters_to_vector([p.grad for p in params])
            clock.compute += time.perf_counter() - t0
            t1 = time.perf_counter()
            distributed.all_reduce(grads, op="mean", link=link)
            clock.exposed += time.perf_counter() - t1
            t0 = time.perf_counter()
            _assign(grads, [p.grad for p in params])
            _finish_step(model, opt, spec)
            clock.compute += time.perf_counter() - t0
        else:
            _finish_step(model, opt, spec)
            clock.compute += time.perf_counter() - t0
        done = step + 1
        rows.append({"step": done, "train_loss": float(loss.detach()), "lr": lr, "seconds": clock.now()})
        if algo.kind != "ddp" and done % algo.tau == 0:
            local = parameters_to_vector(params).detach().clone()
            t1 = time.perf_counter()
            if algo.kind == "co2":
                arrived = pending.wait() if pending is not None else None  # the previous round's average
                clock.exposed += time.perf_counter() - t1
                t0 = time.perf_counter()
                anchor, send = co2_round(algo, state, local, arrived)
                pending = distributed.all_reduce(send.clone(), op="mean", link=link, async_op=True)
            else:
                arrived = distributed.all_reduce(local.clone(), op="mean", link=link)
                clock.exposed += time.perf_counter() - t1
                t0 = time.perf_counter()
                if algo.kind == "local":
                    anchor = arrived
                else:
                    anchor, state.momentum = outer_update(anchor, anchor - arrived, state.momentum,
                                                          beta=algo.outer_momentum, lr=algo.outer_lr)
                send = local
            if spec.record:
                rounds.append({"step": done, "local": _np(local), "sent": _np(send), "params": _np(anchor),
                               "arrived": None if arrived is None else _np(arrived)})
            set_params(anchor)
            clock.compute += time.perf_counter() - t0
        if done % eval_every == 0 and done < spec.steps:
            snapshot(done)
    if algo.kind == "co2" and pending is not None:  # the last round's average: apply it
        t1 = time.perf_counter()
        arrived = pending.wait()
        clock.exposed += time.perf_counter() - t1
        anchor = co2_drain(algo, state, parameters_to_vector(params).detach().clone(), arrived)
        set_params(anchor)
    total = clock.now()
    snapshot(spec.steps)

    # evaluate the snapshots: each rank a share of the val batches, summed (not timed)
    val = eval_batches(val_tokens, spec.batch_size, spec.seq_len, spec.eval_batches, device=device)
    mine = val[rank::world]
    curve = []
    for step, seconds, vec in snapshots:
        if algo.kind == "co2" and algo.reference == "live":  # the ranks' anchors differ by their last round's
            dist.all_reduce(vec)  # deviation: the global model is their mean (the others: equal on every rank)
            vec = vec / world
        set_params(vec)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        if mine:
            loss_sum[0] = trainer.evaluate(model, mine, device) * len(mine)
            loss_sum[1] = len(mine)
        dist.all_reduce(loss_sum)
        curve.append({"step": step, "seconds": seconds, "val_loss": float(loss_sum[0] / loss_sum[1])})
    out = {"rank": rank, "curve": curve, "history": rows, "wall_s": total, "compute_s": clock.compute,
           "exposed_s": clock.exposed, "n_params": anchor.numel(),
           "final": _np(parameters_to_vector(params)) if spec.record else None}
    if spec.record:
        out["rounds"] = rounds
    return out


def _assign(vec: torch.Tensor, tensors) -> None:
    """Copy ``vec`` into ``tensors`` in place (torch's vector_to_parameters would make them views
    of ``vec``, so later in-place steps would write into it)."""
    with torch.no_grad():
        offset = 0
        for t in tensors:
            t.copy_(vec[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def _np(t: torch.Tensor) -> np.ndarray:
    """A numpy copy: results travel between processes by pickle, and a torch tensor would travel
    as a shared-memory handle of a process that has exited by then."""
    return t.detach().cpu().numpy().copy()


def measure_step_seconds(spec: RunSpec, train_tokens: np.ndarray, steps: int = 6, device: str = "cpu") -> float:
    """Compute seconds of one local step (forward, backward, optimizer): the lower quartile of
    ``steps`` timed steps, the slowest rank's; call inside a process group. Two warm-up steps
    are not counted."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = zoo.build(spec.model, seed=spec.seed).to(device)
    opt = _optimizer(model, spec)
    batches = TokenBatches(shard(train_tokens, rank, world), spec.batch_size, spec.seq_len, seed=spec.seed, device=device)
    times = []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        x, y = batches[step]
        trainer.cross_entropy(model, x, y).backward()
        _finish_step(model, opt, spec)
        times.append(time.perf_counter() - t0)
    t = torch.tensor([float(np.percentile(times[2:], 25))], device=device)  # a shared machine: the quieter steps
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def sweep_worker(algos: list[Algo], ratios: list[float], spec: RunSpec, train_tokens, val_tokens,
                 latency_s: float = 0.0, calibration_steps: int = 6, device: str = "cpu") -> dict:
    """Every (ratio, algorithm) run in one process group: calibrate T_comp once, then for each
    ratio the link whose all-reduce of the parameters takes ratio x T_comp, then every algorithm.
    ``ratios`` may hold ``inf`` for an unshaped link. Returns rank 0's view (all ranks agree)."""
    step_s = measure_step_seconds(spec, train_tokens, calibration_steps, device)
    nbytes = sum(p.numel() for p in zoo.build(spec.model, seed=spec.seed).parameters()) * 4
    world = dist.get_world_size()
    runs = []
    for ratio in ratios:
        link = (Link() if not math.isfinite(ratio) else
                link_for_ratio(ratio, step_s, nbytes, world, latency_s))
        for algo in algos:
            dist.barrier()
            result = train_rank(algo, spec, train_tokens, val_tokens, link=link, device=device)
            times = torch.tensor([result["wall_s"], result["compute_s"], result["exposed_s"]], device=device)
            dist.all_reduce(times, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
            runs.append({"algo": algo.name, "kind": algo.kind, "tau": algo.tau, "ratio": ratio,
                         "bandwidth": link.bandwidth, "t_allreduce_s": link.all_reduce_seconds(nbytes, world),
                         "wall_s": float(times[0]), "compute_s": float(times[1]), "exposed_s": float(times[2]),
                         "curve": result["curve"], "history": result["history"]})
    return {"step_s": step_s, "nbytes": nbytes, "world_size": world, "runs": runs}


# ----------------------------------------------------------------- tables of a sweep
NEVER = 999.0  # a time-to-target ratio when the run never reached the target loss


def curves_table(sweep: dict):
    """One row per (run, snapshot): algo, kind, ratio, step, seconds, val_loss."""
    import pandas as pd

    rows = [{"algo": r["algo"], "kind": r["kind"], "ratio": r["ratio"], **c} for r in sweep["runs"] for c in r["curve"]]
    return pd.DataFrame(rows)


def runs_table(sweep: dict):
    """One row per run: times, the measured exposed fraction and the overlap model's, at the
    nominal ratio and at the realised one (T_ar / the run's measured compute per step)."""
    import pandas as pd

    rows = []
    for r in sweep["runs"]:
        steps = r["curve"][-1]["step"]
        step_s = r["compute_s"] / steps
        realised = r["t_allreduce_s"] / step_s
        rows.append({"algo": r["algo"], "kind": r["kind"], "tau": r["tau"], "ratio": r["ratio"],
                     "bandwidth_MBps": r["bandwidth"] / 1e6, "t_allreduce_s": r["t_allreduce_s"],
                     "wall_s": r["wall_s"], "compute_s": r["compute_s"], "exposed_s": r["exposed_s"],
                     "exposed_fraction": r["exposed_s"] / r["wall_s"],
                     "model_fraction": overlap_exposed_fraction(r["kind"], r["ratio"], r["tau"]),
                     "realised_ratio": realised,
                     "model_fraction_realised": overlap_exposed_fraction(r["kind"], realised, r["tau"]),
                     "final_val_loss": r["curve"][-1]["val_loss"]})
    return pd.DataFrame(rows)


def target_loss(curves, fraction: float, ratio: float) -> float:
    """DDP's validation loss at ``fraction`` of its run (interpolated between snapshots)."""
    ddp = curves[(curves["kind"] == "ddp") & (curves["ratio"] == ratio)].sort_values("step")
    return float(np.interp(fraction * ddp["step"].max(), ddp["step"], ddp["val_loss"]))


def times_to_target(curves, target: float):
    """Seconds each run first reaches ``target`` (inf: never), by (algo, ratio)."""
    import pandas as pd

    rows = []
    for (algo, ratio), g in curves.groupby(["algo", "ratio"], sort=False):
        g = g.sort_values("step")
        rows.append({"algo": algo, "ratio": ratio, "target": target,
                     "seconds": time_to_target(g["seconds"], g["val_loss"], target)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- what the notebooks call
def spec_from_params(p, seed: int, steps: int | None = None, eval_every: int | None = None) -> RunSpec:
    """The RunSpec of paper 47's Params ``p`` (``steps``/``eval_every``: the ablation's own)."""
    steps = steps or p.steps
    return RunSpec(model=p.model, steps=steps, batch_size=p.batch_size, seq_len=p.seq_len, lr=p.lr,
                   warmup_steps=min(p.warmup_steps, steps - 1), eval_every=eval_every or p.eval_every,
                   eval_batches=p.eval_batches, seed=seed)


def run_sweep(p, algos: list[Algo], ratios: list[float], spec: RunSpec, corpus_dir, device: str = "cpu",
              calibration_steps: int | None = None) -> dict:
    """:func:`sweep_worker` on ``p.world_size`` spawned ranks over the corpus artifact; rank 0's result."""
    from shared.corpus import load_tokens

    train_tokens, val_tokens = load_tokens(corpus_dir, "train"), load_tokens(corpus_dir, "val")
    zoo.build(p.model)  # imports transformers here, once: the forked ranks inherit it
    args = (algos, ratios, spec, train_tokens, val_tokens, p.latency_s, calibration_steps or p.calibration_steps, device)
    backend = distributed.default_backend(device)
    if backend == "nccl" and torch.cuda.device_count() < p.world_size:
        backend = "gloo"  # ranks sharing one GPU: NCCL refuses that, gloo all-reduces CUDA tensors through the host
    # a whole sweep runs in one spawn: on a loaded box the cpu sweep alone took > 600 s (spawn's default)
    return distributed.spawn(sweep_worker, p.world_size, args=args, backend=backend, threads_per_rank=p.num_threads,
                             timeout_s=3600)[0]


def algos_from_params(p) -> list[Algo]:
    """DDP, Local, SlowMo and CO2 with paper 47's Params ``p``."""
    outer = dict(tau=p.tau, outer_momentum=p.outer_momentum, outer_lr=p.outer_lr)
    return [Algo("ddp"), Algo("local", tau=p.tau), Algo("slowmo", **outer),
            Algo("co2", gap_penalty=p.gap_penalty, clip=p.clip, reference=p.co2_reference, **outer)]
