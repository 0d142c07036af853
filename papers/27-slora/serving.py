"""A real continuous-batching server loop for many LoRA adapters, three ways (S-LoRA Sec. 7).

Every prefill and decode step is a real forward of the model; the loop's clock is the measured
wall time of every iteration's whole body (admission, the forwards, joining and retiring rows of
the batched KV, the PEFT-style server's adapter swaps, the page bookkeeping), bracketed by
``shared.timing.synchronize``; only idle time until the next arrival is skipped. The trace's
arrivals are placed on that clock. Per iteration a server either admits waiting
requests (FCFS) that fit its memory (KV pages reserved for prompt + output tokens at admission, plus
the adapter's pages for S-LoRA's unified pool) and prefills them in one forward (their first
token), or runs one decode step of the running ones; then it retires those that have their
output length (EOS ignored, as the paper's benchmarks). As in S-LoRA's router (LightLLM's), a
running batch takes new requests only every ``max_wait`` decode steps.

Batched KV of requests of different lengths (:class:`KVBatch`): a left-padded batch of per-layer
K/V tensors (given to transformers as a ``DynamicCache``), a 2-D attention mask and per-request
positions; joining requests are concatenated (both sides left-padded to the same length), leaving
ones are dropped with ``index_select`` and leading all-padding columns trimmed.

Memory accounting: the page pool (``shared.paging``) governs ADMISSION only (pages of prompt +
output tokens reserved per request, plus the adapter's pages for the unified pool). The real KV
is dense and padded: every row of a batch holds as many positions as its longest row, and a join
briefly holds both the old and the concatenated tensors. So the tensors in use may exceed what the
pool accounts for (padding), and reserved-but-not-yet-generated pages are not allocated in them.

Servers (same loop, same trace, same clock):

- :class:`SLoRAServer`: any mix of adapters in one batch (``shared.multilora``: one base GEMM, LoRA by
  segments/bmm), adapters fetched into a unified page pool (``shared.paging.UnifiedMemory``, LRU).
- :class:`PeftServer`: a peft ``PeftModel``; a batch holds requests of ONE adapter (static batches,
  the adapter's weights copied into peft's slot of its rank and ``set_adapter`` between batches),
  as the PEFT baseline of the paper.
- :class:`MergedServer`: one merged model per adapter (vLLM-packed: a worker per merged model), each
  with its own continuous batch and its own router counter; it holds at most floor(M / model_bytes)
  copies, beyond that: OOM. The copies run one after the other on the single clock (vLLM-packed ran
  its workers concurrently under MPS): on a GPU this is pessimistic for the merged server, as
  several small-batch forwards could overlap.
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import pandas as pd
import torch
from transformers import DynamicCache

from shared import multilora, paging, timing

from .workload import Request


class Clock:
    """The loop's clock: advanced by the measured wall time of real work only (``timed``, bracketed
    by ``shared.timing.synchronize``); ``now()`` inside a timed call stamps events on it."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.t = 0.0
        self.busy = 0.0
        self._t0: float | None = None

    def timed(self, fn: Callable):
        timing.synchronize(self.device)
        self._t0 = time.perf_counter()
        try:
            return fn()
        finally:
            timing.synchronize(self.device)
            dt = time.perf_counter() - self._t0
            self._t0 = None
            self.t += dt
            self.busy += dt

    def now(self) -> float:
        """The clock at this instant (inside a timed call: including the work done so far)."""
        if self._t0 is None:
            return self.t
        timing.synchronize(self.device)
        return self.t + time.perf_counter() - self._t0


@dataclass
class Row:
    req: Request
    tokens: list[int] = field(default_factory=list)
    first_token: float = math.nan
    finish: float = math.nan

    @property
    def done(self) -> bool:
        return len(self.tokens) >= self.req.output_len


# ----------------------------------------------------------------------------- batched KV
class KVBatch:
    """Running requests of one model: left-padded K/V per layer, attention mask, last tokens."""

    def __init__(self):
        self.rows: list[Row] = []
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.plan = None  # a multilora plan valid while the rows do not change

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def _forward(model, ids, mask, positions, kv):
        cache = DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()
        out = model(ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1), [(layer.keys, layer.values) for layer in cache.layers]

    @classmethod
    def prefill(cls, model, rows: list[Row], context=nullcontext) -> KVBatch:
        """One forward over the new requests' prompts (left-padded); appends each one's first token."""
        longest = max(r.req.prompt_len for r in rows)
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, longest - r.req.prompt_len :] = torch.tensor(r.req.prompt)
            mask[i, longest - r.req.prompt_len :] = 1
        device = next(model.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        with context():
            nxt, kv = cls._forward(model, ids, mask, positions, None)
        batch = cls()
        batch.rows, batch.kv, batch.mask = list(rows), kv, mask
        for r, t in zip(rows, nxt.tolist()):
            r.tokens.append(t)
        return batch

    def decode(self, model, context=nullcontext) -> None:
        """One decode step of every row: feeds its last token, appends the next."""
        last = torch.tensor([r.tokens[-1] for r in self.rows], device=self.mask.device).unsqueeze(1)
        positions = self.mask.sum(1, keepdim=True)
        mask = torch.cat([self.mask, self.mask.new_ones(len(self), 1)], 1)
        with context():
            nxt, self.kv = self._forward(model, last, mask, positions, self.kv)
        self.mask = mask
        for r, t in zip(self.rows, nxt.tolist()):
            r.tokens.append(t)

    def join(self, other: KVBatch) -> None:
        if not len(other):
            return
        if not len(self):
            self.rows, self.kv, self.mask, self.plan = other.rows, other.kv, other.mask, None
            return
        T = max(self.mask.shape[1], other.mask.shape[1])

        def pad(x, dim):  # left-pad dimension `dim` to T
            extra = T - x.shape[dim]
            if not extra:
                return x
            shape = list(x.shape)
            shape[dim] = extra
            return torch.cat([x.new_zeros(shape), x], dim)

        self.kv = [(torch.cat([pad(k, 2), pad(k2, 2)]), torch.cat([pad(v, 2), pad(v2, 2)]))
                   for (k, v), (k2, v2) in zip(self.kv, other.kv)]  # fmt: skip
        self.mask = torch.cat([pad(self.mask, 1), pad(other.mask, 1)])
        self.rows = self.rows + other.rows
        self.plan = None

    def retire(self) -> list[Row]:
        """Drop the rows that have all their tokens; returns them."""
        done = [r for r in self.rows if r.done]
        if not done:
            return []
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        self.rows = [self.rows[i] for i in keep]
        self.plan = None
        if not keep:
            self.kv, self.mask = [], torch.zeros(0, 0, dtype=torch.long)
            return done
        idx = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, idx)
        start = int(mask.any(0).long().argmax())  # leading columns that are padding in every row
        self.mask = mask[:, start:]
        self.kv = [(k.index_select(0, idx)[:, :, start:], v.index_select(0, idx)[:, :, start:]) for k, v in self.kv]
        return done


# ----------------------------------------------------------------------------- servers
def model_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


class _Server:
    name = ""

    def __init__(self, memory: paging.UnifiedMemory, max_batch: int, max_wait: int = 0, device="cpu"):
        self.memory, self.max_batch, self.max_wait = memory, max_batch, max_wait
        self.clock = Clock(device)
        self.decodes_since_prefill = 0

    def _may_prefill(self) -> bool:
        """S-LoRA's router (LightLLM's): a new mini-batch is prefilled when nothing runs or after
        ``max_wait`` decode steps of the running batch (0: at every iteration)."""
        return not self.running() or self.decodes_since_prefill >= self.max_wait

    def running(self) -> int:
        raise NotImplementedError

    def _pool_adapter(self, req: Request) -> str | None:
        return req.adapter  # the adapter's pages in the memory pool (None: not in the pool)

    def _admit_where(self, waiting: deque, eligible: Callable[[Request], bool]) -> list[Request]:
        """FCFS over the waiting requests that ``eligible`` accepts (the others keep their places)."""
        new = self._admit(deque(r for r in waiting if eligible(r)))
        taken = {r.rid for r in new}
        kept = [r for r in waiting if r.rid not in taken]
        waiting.clear()
        waiting.extend(kept)
        return new

    def _admit(self, waiting: deque) -> list[Request]:
        """FCFS: admit from the head of the queue while requests fit (stop at the first that does not)."""
        new = []
        while waiting and self.running() + len(new) < self.max_batch:
            r = waiting[0]
            tokens, adapter = r.prompt_len + r.output_len, self._pool_adapter(r)
            if not self.memory.fits(tokens, adapter):
                break
            self.memory.admit(r.rid, tokens, adapter)
            new.append(waiting.popleft())
        return new

    def _finish(self, done: list[Row], out: list[Row]) -> None:
        now = self.clock.now()
        for r in done:
            r.finish = now
            self.memory.release(r.req.rid)
            out.append(r)


class SLoRAServer(_Server):
    """Continuous batching across adapters: one batch, one base GEMM, LoRA via shared.multilora."""

    name = "slora"

    def __init__(self, ml: multilora.MultiLora, memory, max_batch: int, max_wait: int = 0):
        super().__init__(memory, max_batch, max_wait, next(ml.model.parameters()).device)
        self.ml, self.batch = ml, KVBatch()

    def running(self) -> int:
        return len(self.batch)

    def admit(self, waiting: deque) -> list[Request]:
        return self._admit(waiting) if self._may_prefill() else []

    def step(self, new: list[Request], out: list[Row]) -> None:
        """A prefill of the new requests (then they join the batch), or one decode step of the batch."""
        model = self.ml.model
        if new:
            rows = [Row(r) for r in new]
            nb = KVBatch.prefill(model, rows, lambda: self.ml.batch([r.adapter for r in new]))
            now = self.clock.now()
            for r in rows:
                r.first_token = now
            self.batch.join(nb)
            self._finish(self.batch.retire(), out)
            self.decodes_since_prefill = 0
        elif len(self.batch):
            self.decodes_since_prefill += 1
            b = self.batch
            with self.ml.batch(b.plan if b.plan is not None else [r.req.adapter for r in b.rows]) as plan:
                b.plan = plan  # a plan is reused while the batch does not change
                b.decode(model)
            self._finish(b.retire(), out)


class PeftServer(_Server):
    """peft PeftModel, one adapter per (static) batch; adapters swapped in between batches."""

    name = "peft"

    def __init__(self, peft_model, store: multilora.AdapterStore, memory, max_batch: int):
        super().__init__(memory, max_batch, device=next(peft_model.parameters()).device)
        self.peft_model, self.store = peft_model, store
        self.batch, self.current = KVBatch(), None
        self.base = peft_model.base_model.model

    @staticmethod
    def build(base, store: multilora.AdapterStore, targets: list[str], lora_alpha: float):
        """A PeftModel over ``base`` with one adapter slot per rank of the store (named ``r<rank>``)."""
        from peft import LoraConfig, get_peft_model

        ranks = sorted({w.rank for n in store.names for w in store[n].values()})
        cfg = {r: LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=list(targets)) for r in ranks}
        # adapter slots in the base's dtype (peft would keep them in float32 under a bf16 base)
        model = get_peft_model(base, cfg[ranks[0]], adapter_name=f"r{ranks[0]}", autocast_adapter_dtype=False)
        for r in ranks[1:]:
            model.add_adapter(f"r{r}", cfg[r])
        return model.eval()

    def running(self) -> int:
        return len(self.batch)

    def _pool_adapter(self, req: Request) -> None:
        return None  # peft's slots are fixed weights outside the KV pool

    def admit(self, waiting: deque) -> list[Request]:
        if len(self.batch) or not waiting:
            return []  # a static batch runs to its end
        adapter = waiting[0].adapter
        return self._admit_where(waiting, lambda r: r.adapter == adapter)

    def _swap(self, adapter: str) -> None:
        if adapter == self.current:
            return
        weights = self.store[adapter]
        ranks = {w.rank for w in weights.values()}
        slot = f"r{min(ranks)}"
        slot_modules = {n for n, m in self.base.named_modules() if hasattr(m, "lora_A") and slot in m.lora_A}
        if len(ranks) != 1 or set(weights) != slot_modules:
            raise ValueError(f"peft server: adapter {adapter!r} has ranks {sorted(ranks)} on {len(weights)} modules; "
                             f"a slot needs one rank on all {len(slot_modules)} target modules")  # fmt: skip
        with torch.no_grad():
            for module, w in weights.items():
                layer = self.base.get_submodule(module)
                layer.lora_A[slot].weight.copy_(w.A)
                layer.lora_B[slot].weight.copy_(w.B)
                layer.scaling[slot] = w.scale
        self.peft_model.base_model.set_adapter(slot)
        self.current = adapter

    def step(self, new: list[Request], out: list[Row]) -> None:
        if new:
            rows = [Row(r) for r in new]
            self._swap(new[0].adapter)
            self.batch = KVBatch.prefill(self.peft_model, rows)
            now = self.clock.now()
            for r in rows:
                r.first_token = now
            self._finish(self.batch.retire(), out)
        if len(self.batch):
            self.batch.decode(self.peft_model)
            self._finish(self.batch.retire(), out)


class MergedServer(_Server):
    """One merged model per adapter, each with its own continuous batch (vLLM-packed): per
    iteration every copy either prefills its new requests or runs one decode step, and each copy
    has its own router counter (``decodes_since_prefill[a]``), as independent workers. One KV pool
    and ``max_batch`` are shared by the copies; the copies run one after the other on one clock."""

    name = "merged"

    def __init__(self, copies: dict[str, torch.nn.Module], memory, max_batch: int, max_wait: int = 0):
        super().__init__(memory, max_batch, max_wait, next(next(iter(copies.values())).parameters()).device)
        self.copies = copies
        self.batches = {a: KVBatch() for a in copies}
        self.decodes_since_prefill = dict.fromkeys(copies, 0)

    @staticmethod
    def build(base, store: multilora.AdapterStore, names: list[str], device=None) -> dict[str, torch.nn.Module]:
        """A merged copy of ``base`` per adapter: W + scale * B A computed in float32 and cast to
        the weight's dtype. ``base`` should live on the CPU: each copy is made and merged there and
        then moved to ``device`` (default: the base's), so the device never holds the base in addition."""
        device = next(base.parameters()).device if device is None else torch.device(device)
        copies = {}
        for a in names:
            m = copy.deepcopy(base)
            with torch.no_grad():
                for module, w in store[a].items():
                    weight = m.get_submodule(module).weight
                    delta = w.B.to(weight.device, torch.float32) @ w.A.to(weight.device, torch.float32)
                    weight.copy_((weight.float() + w.scale * delta).to(weight.dtype))
            copies[a] = m.to(device).eval()
        return copies

    def running(self) -> int:
        return sum(len(b) for b in self.batches.values())

    def _pool_adapter(self, req: Request) -> None:
        return None

    def _copy_may_prefill(self, a: str) -> bool:
        return not len(self.batches[a]) or self.decodes_since_prefill[a] >= self.max_wait

    def admit(self, waiting: deque) -> list[Request]:
        ready = {a for a in self.copies if self._copy_may_prefill(a)}
        return self._admit_where(waiting, lambda r: r.adapter in ready)

    def step(self, new: list[Request], out: list[Row]) -> None:
        """Every copy: a prefill of its new requests (they join its batch), or one decode step."""
        groups: dict[str, list[Row]] = {}
        for r in new:
            groups.setdefault(r.adapter, []).append(Row(r))
        for a, b in self.batches.items():
            if a in groups:
                nb = KVBatch.prefill(self.copies[a], groups[a])
                now = self.clock.now()
                for r in groups[a]:
                    r.first_token = now
                b.join(nb)
                self.decodes_since_prefill[a] = 0
            elif len(b):
                b.decode(self.copies[a])
                self.decodes_since_prefill[a] += 1
            else:
                continue
            self._finish(b.retire(), out)


# ----------------------------------------------------------------------------- the loop
def serve(server, requests: list[Request], progress=None) -> list[Row]:
    """Run the trace through ``server``; every request's row (tokens, first-token and finish times)."""
    pending = deque(sorted(requests, key=lambda r: r.arrival))
    waiting: deque[Request] = deque()
    out: list[Row] = []
    bar = progress(range(len(requests)), desc=server.name) if progress else None
    clock = server.clock
    while pending or waiting or server.running():
        while pending and pending[0].arrival <= clock.t:
            waiting.append(pending.popleft())
        if not waiting and not server.running():
            clock.t = pending[0].arrival  # idle until the next arrival
            continue

        def iteration():  # the whole body is timed: admission, forwards, join/retire, bookkeeping
            new = server.admit(waiting)
            if not new and not server.running():
                r = waiting[0]
                raise paging.PoolFull(
                    f"serve: request {r.rid} ({r.prompt_len}+{r.output_len} tokens, {r.adapter}) can never fit the memory budget"
                )
            server.step(new, out)

        before = len(out)
        clock.timed(iteration)
        if bar is not None:
            bar.update(len(out) - before)
    if bar is not None:
        bar.close()
    return sorted(out, key=lambda r: r.req.rid)


def summary(rows: list[Row], slo_s: float) -> dict:
    """Throughput (requests / makespan), average latency, first-token latency, SLO attainment
    (share of requests whose first token came within ``slo_s``)."""
    df = pd.DataFrame({"arrival": [r.req.arrival for r in rows], "first": [r.first_token for r in rows],
                       "finish": [r.finish for r in rows]})  # fmt: skip
    makespan = float(df["finish"].max() - min(0.0, df["arrival"].min()))
    first = df["first"] - df["arrival"]
    return {
        "requests": len(rows),
        "throughput": len(rows) / makespan,
        "avg_latency": float((df["finish"] - df["arrival"]).mean()),
        "avg_first_token_latency": float(first.mean()),
        "slo_attainment": float((first <= slo_s).mean()),
        "makespan": makespan,
    }


# ----------------------------------------------------------------------------- one sweep
def pool_pages(budget_bytes: float, dim: int, bytes_per_value: int) -> int:
    """Pages of ``dim`` values that fit ``budget_bytes`` (0 when the budget is spent)."""
    return max(0, int(budget_bytes // (dim * bytes_per_value)))


def merged_capacity(device_bytes: float, one_model_bytes: int) -> int:
    """How many merged copies of the model fit the device memory: floor(M / model_bytes)."""
    return int(device_bytes // one_model_bytes)


def run_one(server_name: str, base, spec, store, requests: list[Request], targets: list[str], lora_alpha: float,
            max_batch: int, device_bytes: float, max_wait: int = 0, progress=None, device=None) -> tuple[str, list[Row] | None, dict]:  # fmt: skip
    """Build ``server_name`` for this store on ``device``, serve the trace. (status "ok" / "OOM", rows, info).

    ``base`` should stay on the CPU (host memory): each server gets its own copy moved to ``device``
    (default: the base's) and freed afterwards, so the device holds one server's weights at a time."""
    device = next(base.parameters()).device if device is None else torch.device(device)
    weights = model_bytes(base)
    dim, bpv = spec.d_model, next(base.parameters()).element_size()
    kv_per_token = paging.kv_pages_per_token(spec.n_layers)
    longest = max(r.prompt_len + r.output_len for r in requests) * kv_per_token

    def fresh():  # a copy of the base model on the device, for a server that wraps it in place
        return copy.deepcopy(base).to(device)

    def kv_only(pages):
        return paging.UnifiedMemory(paging.PagePool(max(pages, 1), dim, materialize=False), adapter_sizes={},
                                    kv_per_token=kv_per_token)  # fmt: skip

    if server_name == "slora":
        pages = pool_pages(device_bytes - weights, dim, bpv)
        memory = paging.UnifiedMemory(paging.PagePool(pages, dim, materialize=False), store, kv_per_token=kv_per_token)
        server = SLoRAServer(multilora.attach(fresh(), store), memory, max_batch, max_wait)
        info = {"pool_pages": pages}
    elif server_name == "peft":
        peft_model = PeftServer.build(fresh(), store, targets, lora_alpha)
        pages = pool_pages(device_bytes - model_bytes(peft_model), dim, bpv)
        server = PeftServer(peft_model, store, kv_only(pages), max_batch)
        info = {"pool_pages": pages}
    elif server_name == "merged":
        copies = len(store)
        pages = pool_pages(device_bytes - copies * weights, dim, bpv)
        info = {"pool_pages": pages, "capacity": merged_capacity(device_bytes, weights)}
        if copies > info["capacity"] or pages < longest:
            return "OOM", None, info
        server = MergedServer(MergedServer.build(base, store, store.names, device), kv_only(pages), max_batch, max_wait)
    else:
        raise ValueError(f"servers: unknown server {server_name!r}; one of slora, peft, merged")
    with torch.inference_mode():
        rows = serve(server, requests, progress)
    if hasattr(server.memory, "loads"):
        info |= {"adapter_loads": server.memory.loads, "adapter_evictions": server.memory.evictions}
    return "ok", rows, info
