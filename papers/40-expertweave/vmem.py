"""Virtual weight tensors on Linux demand paging, and the paper's memory arithmetic.

ExpertWeave (Sec. 4.2) reserves one contiguous virtual range per expert weight tensor of shape
[M + N * E_max, H_out, H_in] (M base experts, then E_max slots for each of N adapters) and maps
physical pages only under the slots that hold an expert. On Linux an anonymous private
``mmap`` is exactly that: the kernel backs a page with memory only when it is first written,
so a reservation costs address space, not RSS. :class:`VirtualTensor` is such a reservation
seen as a torch tensor (``torch.frombuffer``, no copy); writing an expert into a slot touches
its pages. The page size is the OS's (4 KiB; transparent huge pages are off for this mapping
unless the system forces them), not the paper's 2 MB NPU pages; neighbouring slots share a
partly filled page, as the paper's reference-counted sub-page allocation does.

The arithmetic of Sec. 3.1 (adapter sparsity S_i, fragmentation F_mem) and a KV-capacity model
of the single-device comparison of Sec. 5.4 (Fig. 9) are here too.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

PAGE = mmap.PAGESIZE
TABLE1 = Path(__file__).parent / "data" / "table1_esft_adapters.csv"
_STATUS_KEYS = ("VmRSS", "RssAnon")


# ----------------------------------------------------------------------------- RSS
def rss() -> dict[str, int]:
    """{'VmRSS': bytes, 'RssAnon': bytes} of this process, read from /proc/self/status (Linux)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in _STATUS_KEYS:
                value, unit = rest.split()
                if unit != "kB":
                    raise ValueError(f"/proc/self/status: {key} in unexpected unit {unit!r}")
                out[key] = int(value) * 1024
    missing = [k for k in _STATUS_KEYS if k not in out]
    if missing:
        raise OSError(f"/proc/self/status: no {missing} (needs Linux >= 4.5)")
    return out


# ----------------------------------------------------------------------------- the reservation
class VirtualTensor:
    """``n_slots`` slots of ``slot_shape`` in one anonymous mmap reservation; pages are backed only
    where a slot is written. ``tensor`` is a [n_slots, *slot_shape] view of the reservation.

    Reading a never-written slot gives zeros (and backs its pages): the serving path only ever
    indexes written slots.
    """

    def __init__(self, n_slots: int, slot_shape: Sequence[int], dtype=None):
        import torch

        if n_slots < 1:
            raise ValueError(f"n_slots: must be >= 1, got {n_slots}")
        self.dtype = dtype or torch.float32
        self.slot_shape = tuple(int(s) for s in slot_shape)
        self.slot_numel = math.prod(self.slot_shape)
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        self.slot_bytes = self.slot_numel * itemsize
        self.n_slots = n_slots
        self.reserved_bytes = n_slots * self.slot_bytes
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        self._mm = mmap.mmap(-1, max(self.reserved_bytes, PAGE), flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):  # keep the OS's base page: RSS then counts what is written
            self._mm.madvise(mmap.MADV_NOHUGEPAGE)
        flat = torch.frombuffer(self._mm, dtype=self.dtype, count=n_slots * self.slot_numel)
        self.tensor = flat.view(n_slots, *self.slot_shape)
        self.filled: set[int] = set()

    def write(self, slot: int, value) -> None:
        """Copy ``value`` (slot_shape) into ``slot``: this backs the slot's pages."""
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"slot {slot} out of range [0, {self.n_slots})")
        self.tensor[slot].copy_(value)
        self.filled.add(slot)

    def fill(self, slot: int, byte: int = 1) -> None:
        """Write ``byte`` over the whole slot without a temporary (for measurements)."""
        if not 0 <= slot < self.n_slots:
            raise IndexError(f"slot {slot} out of range [0, {self.n_slots})")
        view = np.frombuffer(self._mm, dtype=np.uint8, count=self.slot_bytes, offset=slot * self.slot_bytes)
        view[:] = byte
        self.filled.add(slot)

    @property
    def used_bytes(self) -> int:
        return len(self.filled) * self.slot_bytes

    @property
    def page_rounded_bytes(self) -> int:
        """Bytes of the distinct pages the written slots overlap (what the kernel must back)."""
        return pages_touched(sorted(self.filled), self.slot_bytes) * PAGE


def pages_touched(slots: Iterable[int], slot_bytes: int, page: int = PAGE) -> int:
    """Distinct pages overlapped by the byte ranges of ``slots`` in a page-aligned reservation."""
    pages: set[int] = set()
    for s in slots:
        first, last = (s * slot_bytes) // page, (s * slot_bytes + slot_bytes - 1) // page
        pages.update(range(first, last + 1))
    return len(pages)


# ----------------------------------------------------------------------------- the measurement
def rss_growth(counts: Sequence[Sequence[int]], n_base: int, e_max: int, n_adapter_slots: int, slot_bytes: int) -> pd.DataFrame:
    """Reserve one [M + N * E_max] tensor per layer, then load the base and the adapters one at a
    time (``counts[i][l]`` experts of adapter i in layer l), reading RssAnon after each step.

    One row per step (``adapters`` loaded so far, 0 = base only): reserved bytes, bytes of the
    experts written, their page-rounded bytes, the padded bytes (every slot of every loaded
    adapter), and the RSS growth since before the reservation.
    """
    import torch

    if len(counts) > n_adapter_slots:
        raise ValueError(f"counts: {len(counts)} adapters do not fit n_adapter_slots={n_adapter_slots}")
    for i, per_layer in enumerate(counts):
        if max(per_layer, default=0) > e_max:
            raise ValueError(f"e_max: adapter {i} tunes {max(per_layer)} experts in a layer, more than e_max={e_max}")
    n_layers = len(counts[0]) if counts else 1
    n_slots = n_base + n_adapter_slots * e_max
    before = rss()["RssAnon"]
    shape = (slot_bytes,)
    tensors = [VirtualTensor(n_slots, shape, dtype=torch.uint8) for _ in range(n_layers)]
    rows = []

    def record(n_loaded: int) -> None:
        now = rss()["RssAnon"]
        rows.append({
            "adapters": n_loaded,
            "reserved_bytes": sum(t.reserved_bytes for t in tensors),
            "used_bytes": sum(t.used_bytes for t in tensors),
            "page_rounded_bytes": sum(t.page_rounded_bytes for t in tensors),
            "padded_bytes": n_layers * (n_base + n_loaded * e_max) * slot_bytes,
            "rss_growth_bytes": now - before,
        })

    reserved_only = rss()["RssAnon"] - before
    for t in tensors:
        for s in range(n_base):
            t.fill(s)
    record(0)
    for i, per_layer in enumerate(counts):
        for layer, t in enumerate(tensors):
            start = n_base + i * e_max
            for s in range(start, start + int(per_layer[layer])):
                t.fill(s)
        record(i + 1)
    table = pd.DataFrame(rows)
    table.attrs["reserved_only_growth_bytes"] = reserved_only
    return table  # the reservations are unmapped when the tensors go


# ----------------------------------------------------------------------------- Sec. 3.1 arithmetic
def sparsity(max_experts: float, avg_experts: float) -> float:
    """S_i = sum_l (E_i - e_i^(l)) / (L E_i) = 1 - mean_l e_i^(l) / E_i."""
    return 1.0 - avg_experts / max_experts


def sparsity_of(per_layer: Sequence[int]) -> float:
    """S_i of one adapter from its per-layer expert counts."""
    e = np.asarray(per_layer, dtype=float)
    return float(1.0 - e.mean() / e.max()) if e.max() > 0 else 0.0


def f_mem(n_base: int, e_max: int, per_adapter_avg: Sequence[float]) -> float:
    """F_mem = L (M + N E_max) / (L M + sum_l sum_i e_i^(l)); with per-adapter layer averages the
    L cancels: (M + N E_max) / (M + sum_i avg_i). N = len(per_adapter_avg)."""
    n = len(per_adapter_avg)
    return (n_base + n * e_max) / (n_base + float(sum(per_adapter_avg)))


def table1(n_base: int = 64) -> pd.DataFrame:
    """The paper's Table 1 (data/table1_esft_adapters.csv) with S_i recomputed from max and avg,
    and the share of a layer's ``n_base`` routed experts each adapter tunes on average (avg / M)."""
    t = pd.read_csv(TABLE1)
    t["sparsity_recomputed"] = [sparsity(m, a) for m, a in zip(t["max_experts"], t["avg_experts"])]
    t["tuned_share"] = t["avg_experts"] / n_base
    return t


# ----------------------------------------------------------------------------- Sec. 5.4 KV capacity
def kv_capacity(
    model_bytes: int,
    adapter_bytes: Sequence[int],
    padded_adapter_bytes: int,
    kv_bytes_per_token: int,
    budget_bytes: int,
) -> pd.DataFrame:
    """Tokens of KV cache left under ``budget_bytes`` when serving the first n adapters, n = 1..N:

    - merged: one full model per adapter (n * model_bytes);
    - padding: one base plus n * E_max expert slots per layer, all backed (``padded_adapter_bytes`` each);
    - expertweave: one base plus only the adapters' experts (``adapter_bytes[i]``).

    Negative room is out of memory (tokens = 0, ``oom`` True). A model, not a measurement.
    """
    rows = []
    for n in range(1, len(adapter_bytes) + 1):
        used = {
            "merged": n * model_bytes,
            "padding": model_bytes + n * padded_adapter_bytes,
            "expertweave": model_bytes + int(sum(adapter_bytes[:n])),
        }
        for kind, weights in used.items():
            room = budget_bytes - weights
            rows.append({"adapters": n, "deployment": kind, "weight_bytes": weights, "oom": room < 0,
                         "kv_tokens": max(room, 0) // kv_bytes_per_token})
    return pd.DataFrame(rows)


def paper_budget(model_bytes: int, merged1_tokens: float = 810e3, merged2_tokens: float = 6e3) -> int:
    """A device budget in proportion to ``model_bytes`` as the paper's single NPU (Sec. 5.4): one
    merged model leaves ``merged1_tokens`` of KV, two leave ``merged2_tokens`` (810K and ~6K), so one
    model's weights are worth (merged1 - merged2) tokens of KV and the budget is
    model_bytes * (1 + merged1 / (merged1 - merged2)). Capacities in tokens then use our own KV
    bytes per token; their ratios do not depend on it."""
    return int(round(model_bytes * (1.0 + merged1_tokens / (merged1_tokens - merged2_tokens))))
