"""Real multi-process runs on torch.distributed, and a slow network link emulated on one box.

    def worker(steps):                      # runs in every process, process group already up
        rank, world = dist.get_rank(), dist.get_world_size()
        ...
        return result                       # anything picklable
    results = distributed.spawn(worker, world_size=2, args=(100,))   # [rank 0's result, rank 1's, ...]

The same worker runs unchanged under torchrun across GPUs or nodes: a script calls
``distributed.run_under_torchrun(worker, args)``, which joins the group torchrun set up
(``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the environment) instead of spawning;
``distributed.torchrun_args(paper, parser)`` gives such a script the arguments every one of
them takes (``--params``, ``--corpus``) and the paper's validated params.

Backend: gloo on CPU, nccl when the run's device is CUDA (each rank takes GPU ``rank % count``).
Processes start by ``fork`` on Linux (milliseconds, and the paper's ``paperNN`` package is
inherited); ``spawn`` elsewhere, where the child re-registers ``paperNN`` before it imports the
worker.

**The emulated link.** One machine's loopback is far faster than the clusters the papers are
about, so collectives can be slowed to a :class:`Link` of given bandwidth and latency (the α-β
model). :func:`all_reduce` runs the real gloo/nccl collective and, when a link is given, does not
complete before ``start + modelled time``: a ring all-reduce of n bytes over w ranks takes
``2(w-1)·latency + 2(w-1)/w · n / bandwidth``. With ``async_op=True`` the caller keeps computing
and :meth:`Pending.wait` blocks only for what the link has not finished yet, which is what
communication–computation overlap hides; ``Pending.exposed_s`` is that blocked time.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import pickle
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 600.0  # a rank that has not reported by then is a hung run
# AdamW's step divides by sqrt(v) + eps (eps = 1e-8): its slope in g is lr * eps / (|g| + eps)^2, up to
# lr / eps, so where |g| ~ eps a last-bit difference in g (an all-reduce sums the shards in another
# order) moves a parameter by up to a whole lr-sized step; where |g| >= 100 eps the slope is <= lr / (1e4 eps)
# (<= 30 at lr 3e-3: a gradient difference of 3e-8 then moves it < 1e-6 a step).
ADAMW_EPS_REGIME = 1e-6
OPS = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


# ---------------------------------------------------------------- the emulated link
@dataclass(frozen=True)
class Link:
    """An α-β network link: ``latency_s`` per message, ``bandwidth`` in bytes/s (inf = not shaped)."""

    bandwidth: float = math.inf
    latency_s: float = 0.0

    def __post_init__(self):
        if not self.bandwidth > 0:
            raise ValueError(f"Link.bandwidth must be > 0 bytes/s (inf for an unshaped link), got {self.bandwidth}")
        if not self.latency_s >= 0:
            raise ValueError(f"Link.latency_s must be >= 0, got {self.latency_s}")

    @property
    def shaped(self) -> bool:
        return math.isfinite(self.bandwidth) or self.latency_s > 0

    def send_seconds(self, nbytes: int) -> float:
        """Point to point: one message of ``nbytes``."""
        return self.latency_s + nbytes / self.bandwidth

    def all_reduce_seconds(self, nbytes: int, world_size: int) -> float:
        """Ring all-reduce (reduce-scatter + all-gather): 2(w-1) steps of n/w bytes each."""
        if world_size <= 1:
            return 0.0
        steps = 2 * (world_size - 1)
        return steps * self.latency_s + steps / world_size * nbytes / self.bandwidth

    def all_gather_seconds(self, nbytes_per_rank: int, world_size: int) -> float:
        """Ring all-gather: w-1 steps, each moving one rank's ``nbytes_per_rank``."""
        if world_size <= 1:
            return 0.0
        return (world_size - 1) * (self.latency_s + nbytes_per_rank / self.bandwidth)


class Pending:
    """A collective in flight; :meth:`wait` returns its tensor once both the real work and the link are done."""

    def __init__(self, tensor: torch.Tensor, work, deadline: float, divide_by: int = 1):
        self.tensor, self._work, self._deadline, self._divide_by = tensor, work, deadline, divide_by
        self.exposed_s: float | None = None  # seconds wait() blocked: the communication not hidden

    def wait(self) -> torch.Tensor:
        if self.exposed_s is not None:  # already waited
            return self.tensor
        start = time.perf_counter()
        if self._work is not None:
            self._work.wait()
        remaining = self._deadline - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)
        if self._divide_by > 1:
            self.tensor.div_(self._divide_by)
        self.exposed_s = time.perf_counter() - start
        return self.tensor


def all_reduce(tensor: torch.Tensor, op: str = "sum", link: Link | None = None, async_op: bool = False):
    """All-reduce ``tensor`` in place over the default group, at the speed of ``link``.

    ``op``: sum, mean, max, min. Returns the tensor (``async_op=False``) or a :class:`Pending`.
    """
    if op not in OPS:
        raise ValueError(f"all_reduce op={op!r} is not allowed; allowed: {', '.join(OPS)}")
    world = dist.get_world_size()
    modelled = (link or Link()).all_reduce_seconds(tensor.numel() * tensor.element_size(), world)
    deadline = time.perf_counter() + modelled
    work = dist.all_reduce(tensor, op=OPS[op], async_op=True)
    pending = Pending(tensor, work, deadline, divide_by=world if op == "mean" else 1)
    return pending if async_op else pending.wait()


# ---------------------------------------------------------------- launching
def default_backend(device: str = "cpu") -> str:
    return "nccl" if str(device).startswith("cuda") else "gloo"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resolve(module: str, qualname: str) -> Callable:
    if module.startswith("paper") and module[5:7].isdigit():  # a paper's package: register it first (spawn)
        from shared.paper import import_paper

        import_paper(module[5:7])
    obj = __import__(module, fromlist=["_"])
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _child(rank, world_size, port, backend, threads, fn_ref, args, kwargs, queue):
    try:
        torch.set_num_threads(threads)
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
        try:
            fn = fn_ref if callable(fn_ref) else _resolve(*fn_ref)
            result = fn(*args, **kwargs)
        finally:
            dist.destroy_process_group()
        # plain pickle bytes: torch's multiprocessing reducers would send tensors as shared-memory
        # handles that die with this process before the parent reads them
        queue.put((rank, True, pickle.dumps(result)))
    except BaseException as exc:  # report every failure to the parent, with its traceback
        queue.put((rank, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def spawn(worker: Callable, world_size: int, args: tuple = (), kwargs: dict | None = None, *,
          backend: str = "gloo", threads_per_rank: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S,
          start_method: str | None = None) -> list[Any]:
    """Run ``worker(*args, **kwargs)`` in ``world_size`` processes joined in one process group.

    With ``spawn`` (not Linux) ``worker`` must be a module-level function, found by name in the
    children; ``fork`` takes any function. Returns the
    workers' return values in rank order; a failing rank raises RuntimeError naming the rank,
    with its traceback, after every process has been stopped.
    """
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"spawn world_size must be an int >= 1, got {world_size!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"spawn backend={backend!r} is not allowed; allowed: gloo, nccl")
    if backend == "nccl" and torch.cuda.device_count() < world_size:  # NCCL refuses two ranks on one GPU
        raise ValueError(f"spawn backend='nccl' needs one GPU per rank: world_size={world_size}, "
                         f"{torch.cuda.device_count()} visible; lower world_size or use backend='gloo'")
    method = start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
    if method != "fork" and ("<locals>" in worker.__qualname__ or worker.__module__ == "__main__"):
        raise ValueError(f"spawn worker {worker.__qualname__!r}: with start_method={method!r} it must be a "
                         "module-level function of an importable module")
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    port = _free_port()
    # fork passes the function itself (nothing is pickled); spawn finds it by name in the child
    fn_ref = worker if method == "fork" else (worker.__module__, worker.__qualname__)
    procs = [ctx.Process(target=_child, args=(r, world_size, port, backend, threads_per_rank, fn_ref, args,
                                              kwargs or {}, queue), daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    failure = None
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < world_size and failure is None:
            try:
                rank, ok, value = queue.get(timeout=1.0)
            except Exception:  # queue.Empty: check for dead or hung ranks
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in results]
                if dead:
                    failure = f"rank {dead[0]} exited with code {procs[dead[0]].exitcode} before reporting"
                elif time.monotonic() > deadline:
                    failure = f"ranks {sorted(set(range(world_size)) - set(results))} did not finish in {timeout_s:.0f} s"
                continue
            if ok:
                results[rank] = pickle.loads(value)
            else:
                failure = f"rank {rank} failed: {value}"
    finally:
        for p in procs:
            p.join(timeout=0 if failure else 10)
            if p.is_alive():
                p.kill()
                p.join()
    if failure:
        raise RuntimeError(f"distributed.spawn({worker.__qualname__}, world_size={world_size}): {failure}")
    return [results[r] for r in range(world_size)]


def run_under_torchrun(worker: Callable, args: tuple = (), kwargs: dict | None = None, *, device: str = "cpu"):
    """Entry point of a script started by torchrun: join its process group, run the worker, leave."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"run_under_torchrun: {', '.join(missing)} not set; start the script with torchrun "
                           "(or call distributed.spawn on one machine)")
    backend = default_backend(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    try:
        return worker(*args, **(kwargs or {}))
    finally:
        dist.destroy_process_group()


def torchrun_args(paper: str, parser: argparse.ArgumentParser, argv: list[str] | None = None):
    """The set-up a paper's torchrun script shares with every other: ``--params`` (a composed
    params.yaml, default the repository's) and ``--corpus`` (the corpus artifact) added to
    ``parser``; ``argv`` parsed; the paper's validated Params loaded and its ``num_threads``
    applied. Returns ``(args, params, seed, device)``, device ``cuda`` when a GPU is visible."""
    from shared import config
    from shared.paths import ROOT

    parser.add_argument("--params", default=str(ROOT / "params.yaml"),
                        help="composed params.yaml (python -m pipelines.params scale=...)")  # fmt: skip
    parser.add_argument("--corpus", default=str(ROOT / "build" / "artifacts" / "corpus"), help="the corpus artifact")
    args = parser.parse_args(argv)
    tree = config.load(args.params)
    _, params = config.paper_params(paper, tree, {})
    if hasattr(params, "num_threads"):
        torch.set_num_threads(params.num_threads)
    return args, params, tree.get("seed", 0), "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------- data-parallel exactness
def adamw_stable_mask(spec, seed: int, batch) -> torch.Tensor:
    """Flat bool mask in parameter order over the zoo model ``spec`` built with ``seed``: the
    elements whose whole-batch gradient at the start (autograd, the trainer's loss on ``batch``)
    has |g| >= :data:`ADAMW_EPS_REGIME`, where AdamW does not amplify rounding."""
    from shared import trainer, zoo

    model = zoo.build(spec, seed=seed)
    trainer.training_loss(model, *batch).backward()
    return torch.cat([q.grad.reshape(-1) for q in model.parameters()]).abs() >= ADAMW_EPS_REGIME


def dp_agreement(ranks: list[dict], single: dict, stable: torch.Tensor | None = None) -> dict:
    """Data-parallel ranks against a single-process run of the same worker (``spawn(worker, 1)``).
    Each result holds ``params`` (flat, final), ``losses`` and ``grads`` (step 1's reduced gradients,
    a list of tensor lists; may be empty). Returns: ``ranks``, ``n_params``, the max |parameter
    difference| over the ranks everywhere and where ``stable`` is set (:func:`adamw_stable_mask`;
    None: everywhere) with the count outside it, the elements any rank moves by more than 1e-5,
    step 1's gradients (max over tensors of max |diff| / max |single|; None without them), the max
    loss difference, and whether the ranks agree bit for bit."""
    gap = torch.stack([(r["params"] - single["params"]).abs() for r in ranks]).amax(0)
    stable = torch.ones_like(gap, dtype=torch.bool) if stable is None else stable
    grads = [(a, b) for ca, cb in zip(ranks[0]["grads"], single["grads"]) for a, b in zip(ca, cb)]
    return {"ranks": len(ranks), "n_params": int(gap.numel()), "max_abs_diff_vs_single": float(gap.max()),
            "max_abs_diff_outside_eps": float(gap[stable].max()), "eps_regime_elements": int((~stable).sum()),
            "elements_over_1e-5": int((gap > 1e-5).sum()),
            "grad_max_rel_err": max((float((a - b).abs().max() / b.abs().max()) for a, b in grads), default=None),
            "loss_max_abs_diff": max(abs(a - b) for a, b in zip(ranks[0]["losses"], single["losses"])),
            "ranks_agree": all(torch.equal(r["params"], ranks[0]["params"]) for r in ranks)}  # fmt: skip
