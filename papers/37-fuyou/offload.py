"""Fuyou's synchronous out-of-core AdamW: optimizer state on the SSD tier, updated chunk by chunk.

The parameters of a model are cut into chunks in the order their gradients are complete in
the backward pass (``chunks``): the final norm (and an untied LM head), the decoder layers
from the last to the first, then the embedding (tied to the head, so its gradient is the
last to be complete). Each chunk's fp32 master weights, Adam m and v live in one file of the
``ssd.Disk`` as ``[master | m | v]`` (float32). Chunks named in ``resident`` keep that buffer
in memory instead (the swap plan of ``costmodel.best_plan``).

Two schedules, one update rule, the same bits:

- ``sequential`` (ZeRO-Infinity-like): forward, backward, then per chunk read -> AdamW -> write.
- ``overlapped`` (Fuyou-like): the disk starts reading the first ``prefetch`` chunks at the
  start of the step (during the forward); a post-accumulate-grad hook hands a chunk to the
  Adam worker thread the moment its last gradient is accumulated, so its read/step/write runs
  while backward works on the layers below; after a step the worker queues the next prefetch
  read, then the delayed write-back of the chunk it updated. The step ends when every chunk is
  updated and written (synchronous: the next forward sees every update, nothing is stale).

The update of one chunk is torch's own AdamW kernel (``torch.optim.adamw.adamw``, fused on CPU
and CUDA as ``shared.trainer`` uses it) on views of the chunk buffer, so the weights equal those
of ``shared.trainer.train`` bit for bit (fp32, no gradient clipping: a global norm would need
every gradient before the first update, which the overlap forbids; tests/papers/test_p37_*).
On CUDA the gradients go to the host and the new weights back on a separate copy stream; the
Adam step is Fuyou's CPU Adam.
"""

from __future__ import annotations

import copy
import queue
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.optim.adamw import adamw as adamw_functional

from shared import trainer

from .ssd import Disk

Schedule = Literal["sequential", "overlapped"]
SCHEDULES = ("sequential", "overlapped")
EPS = 1e-8  # shared.trainer's AdamW eps


@dataclass
class Chunk:
    index: int
    name: str
    names: list[str]
    params: list[torch.nn.Parameter]

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def state_bytes(self) -> int:
        """fp32 master + m + v."""
        return 3 * 4 * self.numel


def chunks(model) -> list[Chunk]:
    """The model's trainable parameters in groups, in the order backward completes them."""
    groups: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
    tied = {id(model.get_input_embeddings().weight)} if hasattr(model, "get_input_embeddings") else set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = re.search(r"\.layers\.(\d+)\.", name)
        key = f"layer{int(layer.group(1)):03d}" if layer else ("embed" if id(p) in tied else "head")
        groups.setdefault(key, []).append((name, p))
    layers = sorted((k for k in groups if k.startswith("layer")), reverse=True)
    order = [k for k in ["head", *layers, "embed"] if k in groups]
    return [Chunk(i, key, [n for n, _ in groups[key]], [p for _, p in groups[key]]) for i, key in enumerate(order)]


class OffloadedAdamW:
    """AdamW whose state lives on ``disk`` per chunk (``resident`` chunks: in memory)."""

    def __init__(self, model, cfg: trainer.TrainConfig, disk: Disk, *, resident=(), prefetch: int = 2, grad_reduce=None):
        if cfg.grad_clip > 0:
            raise ValueError(f"grad_clip: the overlapped update cannot clip by the global norm; set 0 (got {cfg.grad_clip})")
        if prefetch < 1:
            raise ValueError(f"prefetch: must be >= 1 chunk, got {prefetch}")
        self.model, self.cfg, self.disk, self.prefetch = model, cfg, disk, prefetch
        # data parallelism (paper37.dp): called in place on a chunk's gradients right before its
        # update (chunk order is the same on every rank, the Adam thread runs one chunk at a time)
        self.grad_reduce = grad_reduce
        self.chunks = chunks(model)
        bad = sorted(set(resident) - {c.index for c in self.chunks})
        if bad:
            raise ValueError(f"resident: no chunks {bad}; the model has chunks 0..{len(self.chunks) - 1}")
        self.resident: dict[int, np.ndarray] = {}
        self.steps = {id(p): torch.zeros((), dtype=torch.float32) for c in self.chunks for p in c.params}
        for c in self.chunks:
            buf = np.zeros(3 * c.numel, dtype=np.float32)
            torch.from_numpy(buf[: c.numel]).copy_(torch.cat([p.detach().reshape(-1).cpu() for p in c.params]))
            if c.index in set(resident):
                self.resident[c.index] = buf
            else:
                disk.create(c.index, buf)
        self.swapped = [c.index for c in self.chunks if c.index not in self.resident]
        # Reused chunk buffers: a fresh buffer per read would page-fault every time (and take
        # the kernel's memory-map lock the compute thread needs too). prefetch reads ahead plus
        # the chunk being written back plus one is enough: no read ever waits on a later write.
        largest = max((3 * self.chunks[k].numel for k in self.swapped), default=0)
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(prefetch + 2 if self.swapped else 0):
            self._pool.put(np.zeros(largest, dtype=np.float32))
        self.device = next(model.parameters()).device
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._lock = threading.Lock()
        self._active = False
        self._grad_events: dict[int, torch.cuda.Event] = {}
        self._hook_handles = []
        for c in self.chunks:
            for p in c.params:
                self._hook_handles.append(p.register_post_accumulate_grad_hook(self._make_hook(c.index)))
        self.adam_seconds: dict[int, float] = {}  # last Adam time per chunk (profiling)

    # --- the update of one chunk -------------------------------------------------
    def update(self, k: int, buf: np.ndarray, lr: float) -> None:
        """AdamW on chunk ``k`` with its state in ``buf``; the model's weights get the new master."""
        started = time.perf_counter()
        c = self.chunks[k]
        flat = torch.from_numpy(buf)
        master, m, v = flat[: c.numel], flat[c.numel : 2 * c.numel], flat[2 * c.numel :]
        views, offset = [], 0
        for p in c.params:
            n = p.numel()
            views.append((p, master[offset : offset + n].view(p.shape), m[offset : offset + n].view(p.shape),
                          v[offset : offset + n].view(p.shape)))
            offset += n
        if self.grad_reduce is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the chunk's gradients are complete before the collective reads them
            self.grad_reduce([p.grad for p in c.params])
        grads = self._host_grads(c)
        for decay in (True, False):
            group = [(w, g, mm, vv, self.steps[id(p)]) for (p, w, mm, vv), g in zip(views, grads) if (p.ndim >= 2) == decay]
            if not group:
                continue
            w, g, mm, vv, st = map(list, zip(*group))
            adamw_functional(
                w, g, mm, vv, [], st, fused=True, amsgrad=False, beta1=self.cfg.beta1, beta2=self.cfg.beta2, lr=lr,
                weight_decay=self.cfg.weight_decay if decay else 0.0, eps=EPS, maximize=False,
            )
        self._write_weights(views)
        self.adam_seconds[k] = time.perf_counter() - started

    def _host_grads(self, c: Chunk) -> list[torch.Tensor]:
        if self._copy_stream is None:
            return [p.grad for p in c.params]
        ready = self._grad_events.get(c.index)  # recorded by the hook (overlapped), else after backward
        if ready is not None:
            self._copy_stream.wait_event(ready)
        else:
            self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._copy_stream):
            return [p.grad.to("cpu") for p in c.params]

    def _write_weights(self, views) -> None:
        with torch.no_grad():
            if self._copy_stream is None:
                for p, w, _, _ in views:
                    p.copy_(w)
                return
            with torch.cuda.stream(self._copy_stream):
                for p, w, _, _ in views:
                    p.copy_(w.to(self.device))
            self._copy_stream.synchronize()

    def state(self, k: int) -> np.ndarray:
        """A copy of chunk ``k``'s ``[master | m | v]`` (read without the throttle's trace)."""
        if k in self.resident:
            return self.resident[k].copy()
        return np.fromfile(self.disk.path(k), dtype=np.float32)

    # --- one training step under a schedule --------------------------------------
    def step(self, x, y, lr: float, schedule: Schedule) -> dict:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: {schedule!r} is not one of {SCHEDULES}")
        t0 = time.perf_counter()
        self._reads: dict[int, Future] = {}
        self._next_read = 0
        self._jobs: list[Future] = []
        self._writes: list[Future] = []
        self._lr = lr
        # torch's intra-op thread count is per thread: a new thread would use every core (and spin)
        threads = dict(initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
        io = self._io = ThreadPoolExecutor(1, thread_name_prefix="p37-disk", **threads)
        cpu = self._cpu = ThreadPoolExecutor(1, thread_name_prefix="p37-adam", **threads)
        try:
            self._overlap = schedule == "overlapped"
            if self._overlap:
                for _ in range(min(self.prefetch, len(self.swapped))):
                    self._request_read()
            with self._lock:
                self._pending = {c.index: len(c.params) for c in self.chunks}
                self.ready_at = {}
                self._grad_events = {}
                self._active = True
            with trainer._autocast(self.device.type, self.cfg.dtype):
                loss = trainer.training_loss(self.model, x, y)
            t1 = time.perf_counter()
            loss.backward()
            self._sync()
            t2 = time.perf_counter()
            if schedule == "sequential":
                for c in self.chunks:
                    if c.index in self.resident:
                        self.update(c.index, self.resident[c.index], lr)
                        continue
                    buf = self._read(c.index)
                    self.update(c.index, buf, lr)
                    self._write(c.index, buf)
            else:
                for job in self._jobs:
                    job.result()
                for w in self._writes:
                    w.result()
                if len(self._jobs) != len(self.chunks):
                    raise RuntimeError(f"overlapped step: {len(self._jobs)} of {len(self.chunks)} chunks got a gradient")
            self._sync()
        finally:
            self._active = False
            io.shutdown(wait=True)
            cpu.shutdown(wait=True)
        for c in self.chunks:
            for p in c.params:
                p.grad = None
        t3 = time.perf_counter()
        self.ready_s = [self.ready_at[c.index] - t1 for c in self.chunks]  # gradient complete, from backward start
        return {"loss": float(loss.detach()), "forward_s": t1 - t0, "backward_s": t2 - t1, "step_s": t3 - t0, "t0": t0}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _request_read(self) -> None:
        k = self.swapped[self._next_read]
        self._reads[k] = self._io.submit(self._read, k)
        self._next_read += 1

    def _read(self, k: int) -> np.ndarray:
        """Chunk ``k``'s state from the disk into a pooled buffer (a view of its length)."""
        buf = self._pool.get()[: 3 * self.chunks[k].numel]
        return self.disk.read(k, out=buf)

    def _write(self, k: int, buf: np.ndarray) -> None:
        self.disk.write(k, buf)
        self._pool.put(buf.base if buf.base is not None else buf)

    def _make_hook(self, k: int):
        def hook(_param) -> None:
            if not self._active:
                return
            with self._lock:
                self._pending[k] -= 1
                ready = self._pending[k] == 0
            if ready:
                self.ready_at[k] = time.perf_counter()
                if self._overlap and self._copy_stream is not None:
                    self._grad_events[k] = torch.cuda.Event()
                    self._grad_events[k].record()  # on the stream backward computes this chunk on
                if self._overlap:
                    self._jobs.append(self._cpu.submit(self._overlapped_job, k))

        return hook

    def _overlapped_job(self, k: int) -> None:
        if k in self.resident:
            self.update(k, self.resident[k], self._lr)
            return
        while k not in self._reads:  # beyond the prefetch window: read it now
            self._request_read()
        buf = self._reads.pop(k).result()
        self.update(k, buf, self._lr)
        if self._next_read < len(self.swapped):
            self._request_read()  # prefetch the next chunk first ...
        self._writes.append(self._io.submit(self._write, k, buf))  # ... then the delayed write-back

    def close(self) -> None:
        for h in self._hook_handles:
            h.remove()


def train(model, batches, cfg: trainer.TrainConfig, disk: Disk, *, schedule: Schedule, resident=(), prefetch: int = 2,
          start: int = 0, steps: int | None = None, progress=None, grad_reduce=None) -> tuple[pd.DataFrame, OffloadedAdamW]:
    """``steps`` (default ``cfg.steps``) updates of ``model`` in place from batch ``start`` on:
    one row per step (loss, forward_s, backward_s, step_s) and the optimizer (its state).
    ``grad_reduce``: see :class:`OffloadedAdamW` (data parallelism, paper37.dp)."""
    model.train()
    opt = OffloadedAdamW(model, cfg, disk, resident=resident, prefetch=prefetch, grad_reduce=grad_reduce)
    rows = []
    steps = cfg.steps if steps is None else steps
    device = next(model.parameters()).device
    try:
        it = range(start, start + steps)
        for step in (progress(it, desc=schedule, total=steps) if progress else it):
            x, y = batches[step]
            lr = cfg.lr * trainer.lr_multiplier(step, cfg)
            rows.append({"step": step, "lr": lr, **opt.step(x.to(device), y.to(device), lr, schedule)})
    finally:
        opt.close()
    return pd.DataFrame(rows), opt


def lockstep(model, batches, cfg: trainer.TrainConfig, folder, setups: list[dict], *, steps: int, start: int = 0,
             progress=None) -> list[pd.DataFrame]:
    """Several set-ups (each a dict of ``schedule`` and optionally ``bandwidth_mb_s``,
    ``latency_ms``, ``resident``, ``prefetch``), each on its own copy of ``model`` and its own
    disk, advanced one step each in turn: load that drifts on a shared machine then hits every
    set-up alike. One table per set-up: the step rows plus ``ready_s`` and ``adam_s`` per chunk."""
    device = next(model.parameters()).device
    runs = []
    try:
        for setup in setups:
            disk = Disk.temporary(folder, bandwidth_mb_s=setup.get("bandwidth_mb_s"), latency_ms=setup.get("latency_ms", 0.0))
            copy_ = copy.deepcopy(model).train()
            runs.append((setup, disk, OffloadedAdamW(copy_, cfg, disk, resident=setup.get("resident", ()),
                                                     prefetch=setup.get("prefetch", 2)), []))
        it = range(start, start + steps)
        for step in (progress(it, desc="lockstep", total=steps) if progress else it):
            x, y = batches[step]
            x, y = x.to(device), y.to(device)
            lr = cfg.lr * trainer.lr_multiplier(step, cfg)
            for setup, _, opt, rows in runs:
                row = opt.step(x, y, lr, setup["schedule"])
                rows.append({"step": step, **row, "ready_s": list(opt.ready_s),
                             "adam_s": [opt.adam_seconds[c.index] for c in opt.chunks]})
    finally:
        for _, disk, opt, _ in runs:
            opt.close()
            disk.close()
    return [pd.DataFrame(rows).drop(columns=["t0"]) for *_, rows in runs]
