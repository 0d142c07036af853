"""Unified paging: one pre-allocated pool of fixed-size pages for KV cache and LoRA adapters.

A *page* is one vector of ``dim`` values (``dim`` = the model's hidden size H). The pool is ONE
flat pool for all layers (our choice; a per-layer pool with one index shared by every layer is the
other layout, with the same page counts): a KV-cache token of an L-layer model takes one K page and
one V page per layer (2L pages); an adapter of rank r takes, per adapted matrix, r pages for the
rows of A (``[r, in]``) and r pages for the columns of B stored as rows (``B.T``, ``[r, out]``).
Since every page has the same size, KV of any length and adapters of any rank share the pool with
no external fragmentation: pages come from a free list and the pages of one request or adapter
need not be adjacent; index arrays (``torch.index_select``) gather them back.

- :class:`PagePool`: the pool (optionally materialized: a ``[n_pages, dim]`` tensor), a free list,
  pages by owner, ``write`` / ``gather``.
- :class:`UnifiedMemory`: KV of requests + adapters fetched on demand from host memory
  (``multilora.AdapterStore``) into the SAME pool; adapters not used by a running request are
  evicted least-recently-used first when pages are needed.
- :class:`SeparateMemory`: the baseline of systems that reserve a fixed split: a KV pool plus an
  adapter pool of fixed-size slots of the largest rank (a small rank wastes the rest of its slot).

Both managers answer the same calls (``admit``, ``extend``, ``release``, ``fits``) and report
``utilisation`` (pages holding data / pages reserved). :func:`fill` admits requests until the first
that does not fit: the achievable batch size under the same budget.

Errors when the pool is full are one line naming what was requested and what is free (:class:`PoolFull`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch


class PoolFull(RuntimeError):
    """Not enough free pages for a request (the message names what was asked and what is free)."""


def kv_pages_per_token(n_layers: int) -> int:
    """Pages one cached token takes: one K and one V page per layer."""
    return 2 * n_layers


def adapter_pages(weights: Mapping, dim: int | None = None) -> int:
    """Pages of one adapter ({module: LoraWeights}): 2r per adapted matrix (A rows, B columns as rows)."""
    total = 0
    for module, w in weights.items():
        if dim is not None and (w.A.shape[1] > dim or w.B.shape[0] > dim):
            raise ValueError(f"adapter module {module!r}: A {tuple(w.A.shape)} / B {tuple(w.B.shape)} do not fit pages of {dim}")
        total += 2 * w.rank
    return total


# ----------------------------------------------------------------------------- the pool
class PagePool:
    """``n_pages`` pages of ``dim`` values; allocation from a free list, pages grouped by owner."""

    def __init__(self, n_pages: int, dim: int, dtype=torch.float32, device="cpu", materialize: bool = True):
        if n_pages < 1:
            raise ValueError(f"n_pages: must be >= 1, got {n_pages}")
        if dim < 1:
            raise ValueError(f"dim: must be >= 1, got {dim}")
        self.n_pages, self.dim = n_pages, dim
        self.data = torch.zeros(n_pages, dim, dtype=dtype, device=device) if materialize else None
        # free list as a stack: freed pages are reused first, so an owner's pages scatter over the pool
        self._free: list[int] = list(range(n_pages - 1, -1, -1))
        self._owned: dict[object, list[int]] = {}

    @property
    def n_free(self) -> int:
        return len(self._free)

    @property
    def n_used(self) -> int:
        return self.n_pages - len(self._free)

    def owners(self) -> list:
        return list(self._owned)

    def pages(self, owner) -> torch.Tensor:
        """The page indices of ``owner``, in allocation order (an index array for ``gather``)."""
        return torch.tensor(self._owned.get(owner, []), dtype=torch.long)

    def n_pages_of(self, owner) -> int:
        return len(self._owned.get(owner, ()))

    def alloc(self, n: int, owner, what: str = "") -> torch.Tensor:
        """``n`` free pages for ``owner`` (added to its pages); their indices. Raises :class:`PoolFull`."""
        if n < 0:
            raise ValueError(f"alloc: n must be >= 0, got {n}")
        if n > len(self._free):
            label = what or f"owner {owner!r}"
            raise PoolFull(f"pool: {label} needs {n} pages, {len(self._free)} of {self.n_pages} are free")
        got = [self._free.pop() for _ in range(n)]
        self._owned.setdefault(owner, []).extend(got)
        return torch.tensor(got, dtype=torch.long)

    def free(self, owner) -> int:
        """Return every page of ``owner`` to the free list; how many."""
        got = self._owned.pop(owner, [])
        self._free.extend(reversed(got))
        return len(got)

    def write(self, index: torch.Tensor, vectors: torch.Tensor) -> None:
        """Store ``vectors`` ``[n, <=dim]`` (zero-padded to ``dim``) in pages ``index``."""
        if self.data is None:
            raise RuntimeError("pool: not materialized (materialize=False): it only counts pages")
        if vectors.shape[0] != len(index) or vectors.shape[1] > self.dim:
            raise ValueError(f"write: {len(index)} pages of {self.dim} cannot hold vectors {tuple(vectors.shape)}")
        rows = vectors.to(self.data.dtype)
        if rows.shape[1] < self.dim:
            rows = torch.nn.functional.pad(rows, (0, self.dim - rows.shape[1]))
        self.data.index_copy_(0, index.to(self.data.device), rows)

    def gather(self, index: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """The vectors in pages ``index`` (``[n, dim]``, or the first ``width`` values of each)."""
        if self.data is None:
            raise RuntimeError("pool: not materialized (materialize=False): it only counts pages")
        out = self.data.index_select(0, index.to(self.data.device))
        return out if width is None else out[:, :width]


# ----------------------------------------------------------------------------- memory managers
class _Memory:
    """What both managers share: requests' KV pages, resident adapters with reference counts and LRU."""

    kv_per_token: int

    def __init__(self, adapter_sizes: Mapping[str, int], kv_per_token: int):
        if kv_per_token < 1:
            raise ValueError(f"kv_per_token: must be >= 1, got {kv_per_token}")
        self.kv_per_token = kv_per_token
        self.adapter_sizes = dict(adapter_sizes)  # adapter -> pages holding its data
        self.requests: dict[object, tuple[int, str | None]] = {}  # request -> (tokens, adapter)
        self.users: dict[str, int] = {}  # adapter -> running requests using it
        self.resident: OrderedDict[str, None] = OrderedDict()  # LRU order: least recent first
        self.loads = self.evictions = 0

    def _size(self, adapter: str) -> int:
        if adapter not in self.adapter_sizes:
            raise KeyError(f"adapter: unknown adapter {adapter!r} ({len(self.adapter_sizes)} known)")
        return self.adapter_sizes[adapter]

    def evictable(self) -> list[str]:
        """Resident adapters no running request uses, least recently used first."""
        return [a for a in self.resident if not self.users.get(a)]

    def admit(self, rid, tokens: int, adapter: str | None = None) -> None:
        """Reserve KV for ``tokens`` tokens of request ``rid`` and make its adapter resident."""
        if rid in self.requests:
            raise ValueError(f"request {rid!r}: already admitted")
        if adapter is not None:
            self._fetch(adapter, extra=tokens * self.kv_per_token, rid=rid)
        self._kv_alloc(rid, tokens)
        self.requests[rid] = (tokens, adapter)
        if adapter is not None:
            self.users[adapter] = self.users.get(adapter, 0) + 1

    def extend(self, rid, tokens: int = 1) -> None:
        """``tokens`` more cached tokens of a running request (one per decode step)."""
        have, adapter = self.requests[rid]
        self._kv_alloc(rid, tokens, grow=True)
        self.requests[rid] = (have + tokens, adapter)

    def release(self, rid) -> None:
        """A finished request: its KV pages are freed; its adapter stays resident (evictable)."""
        _, adapter = self.requests.pop(rid)
        self._kv_free(rid)
        if adapter is not None:
            self.users[adapter] -= 1

    def _touch(self, adapter: str) -> None:
        self.resident.move_to_end(adapter)

    @property
    def data_pages(self) -> int:
        kv = sum(t for t, _ in self.requests.values()) * self.kv_per_token
        return kv + sum(self.adapter_sizes[a] for a in self.resident)

    @property
    def utilisation(self) -> float:
        """Pages holding data (KV of running requests, resident adapters' weights) / pages reserved."""
        return self.data_pages / self.reserved_pages


class UnifiedMemory(_Memory):
    """KV cache and adapters in ONE :class:`PagePool`; adapters fetched on demand, LRU eviction.

    ``store`` (a ``multilora.AdapterStore``) gives the adapters and their sizes; with a
    materialized pool, a fetched adapter's A rows and B columns are copied into its pages
    (``adapter_weights`` gathers them back).
    """

    def __init__(self, pool: PagePool, store=None, kv_per_token: int = 2, adapter_sizes: Mapping[str, int] | None = None):
        if (store is None) == (adapter_sizes is None):
            raise ValueError("UnifiedMemory: give exactly one of store (an AdapterStore) or adapter_sizes")
        sizes = adapter_sizes if store is None else {n: adapter_pages(store[n], pool.dim) for n in store.names}
        super().__init__(sizes, kv_per_token)
        self.pool, self.store = pool, store

    @property
    def reserved_pages(self) -> int:
        return self.pool.n_pages

    def fits(self, tokens: int, adapter: str | None = None) -> bool:
        """Would ``admit`` succeed (counting the pages of evictable adapters as free)?"""
        need = tokens * self.kv_per_token
        if adapter is not None and adapter not in self.resident:
            need += self._size(adapter)
        evictable = sum(self.adapter_sizes[a] for a in self.evictable() if a != adapter)
        return need <= self.pool.n_free + evictable

    def _make_room(self, need: int, keep: str | None, what: str) -> None:
        for victim in self.evictable():
            if self.pool.n_free >= need:
                break
            if victim != keep:
                self.pool.free(("adapter", victim))
                del self.resident[victim]
                self.evictions += 1
        if self.pool.n_free < need:
            in_use = sum(self.adapter_sizes[a] for a in self.resident if self.users.get(a))
            raise PoolFull(
                f"pool: {what} needs {need} pages, {self.pool.n_free} of {self.pool.n_pages} are free "
                f"({in_use} hold adapters in use, {self.pool.n_used - in_use} hold KV)"
            )

    def _fetch(self, adapter: str, extra: int = 0, rid=None) -> None:
        if adapter in self.resident:
            self._touch(adapter)
            self._make_room(extra, adapter, f"request {rid!r} ({extra} KV pages)")
            return
        size = self._size(adapter)
        self._make_room(size + extra, None, f"adapter {adapter!r} ({size} pages) + request {rid!r} ({extra} KV pages)")
        index = self.pool.alloc(size, ("adapter", adapter))
        if self.pool.data is not None and self.store is not None:
            self._write(adapter, index)
        self.resident[adapter] = None
        self.loads += 1

    def _write(self, adapter: str, index: torch.Tensor) -> None:
        at = 0
        for module in sorted(self.store[adapter]):
            w = self.store[adapter][module]
            r = w.rank
            self.pool.write(index[at : at + r], w.A)
            self.pool.write(index[at + r : at + 2 * r], w.B.T)
            at += 2 * r

    def adapter_weights(self, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{module: (A, B)} of a resident adapter, gathered from its pages (index_select)."""
        if adapter not in self.resident:
            raise KeyError(f"adapter: {adapter!r} is not resident in the pool")
        index, out, at = self.pool.pages(("adapter", adapter)), {}, 0
        for module in sorted(self.store[adapter]):
            w = self.store[adapter][module]
            r, d_in, d_out = w.rank, w.A.shape[1], w.B.shape[0]
            A = self.pool.gather(index[at : at + r], d_in)
            B = self.pool.gather(index[at + r : at + 2 * r], d_out).T
            out[module] = (A, B)
            at += 2 * r
        return out

    def kv_pages(self, rid) -> torch.Tensor:
        """The page indices of request ``rid``'s KV cache (in allocation order: not contiguous)."""
        return self.pool.pages(("kv", rid))

    def _kv_alloc(self, rid, tokens: int, grow: bool = False) -> None:
        need = tokens * self.kv_per_token
        if need > self.pool.n_free:
            self._make_room(need, self.requests.get(rid, (0, None))[1], f"request {rid!r} ({need} KV pages)")
        self.pool.alloc(need, ("kv", rid))

    def _kv_free(self, rid) -> None:
        self.pool.free(("kv", rid))


class SeparateMemory(_Memory):
    """A fixed split: ``kv_pages`` pages for KV, and ``adapter_slots`` slots of ``slot_pages`` pages
    (the largest adapter's size) for adapters, one adapter per slot whatever its rank."""

    def __init__(self, kv_pages: int, adapter_slots: int, adapter_sizes: Mapping[str, int], kv_per_token: int = 2,
                 slot_pages: int | None = None):  # fmt: skip
        super().__init__(adapter_sizes, kv_per_token)
        self.slot_pages = max(self.adapter_sizes.values()) if slot_pages is None else slot_pages
        if adapter_slots < 1 or kv_pages < 1:
            raise ValueError(f"SeparateMemory: kv_pages and adapter_slots must be >= 1, got {kv_pages}, {adapter_slots}")
        if any(s > self.slot_pages for s in self.adapter_sizes.values()):
            raise ValueError(f"slot_pages: {self.slot_pages} is smaller than the largest adapter ({max(self.adapter_sizes.values())} pages)")
        self.kv_capacity, self.adapter_slots = kv_pages, adapter_slots
        self.kv_used = 0

    @classmethod
    def split(cls, total_pages: int, adapter_fraction: float, adapter_sizes: Mapping[str, int], kv_per_token: int = 2):
        """A budget of ``total_pages`` split: ``adapter_fraction`` of it as max-rank slots, the rest KV."""
        slot = max(adapter_sizes.values())
        slots = max(1, int(total_pages * adapter_fraction) // slot)
        return cls(total_pages - slots * slot, slots, adapter_sizes, kv_per_token, slot)

    @property
    def reserved_pages(self) -> int:
        return self.kv_capacity + self.adapter_slots * self.slot_pages

    def fits(self, tokens: int, adapter: str | None = None) -> bool:
        if self.kv_used + tokens * self.kv_per_token > self.kv_capacity:
            return False
        if adapter is None or adapter in self.resident:
            return True
        self._size(adapter)
        return len(self.resident) < self.adapter_slots or bool(self.evictable())

    def _fetch(self, adapter: str, extra: int = 0, rid=None) -> None:
        if self.kv_used + extra > self.kv_capacity:
            raise PoolFull(f"kv pool: request {rid!r} needs {extra} pages, {self.kv_capacity - self.kv_used} of {self.kv_capacity} are free")
        if adapter in self.resident:
            self._touch(adapter)
            return
        self._size(adapter)
        if len(self.resident) >= self.adapter_slots:
            victims = self.evictable()
            if not victims:
                raise PoolFull(f"adapter pool: adapter {adapter!r} needs 1 slot, 0 of {self.adapter_slots} are free (all in use)")
            del self.resident[victims[0]]
            self.evictions += 1
        self.resident[adapter] = None
        self.loads += 1

    def _kv_alloc(self, rid, tokens: int, grow: bool = False) -> None:
        need = tokens * self.kv_per_token
        if self.kv_used + need > self.kv_capacity:
            raise PoolFull(f"kv pool: request {rid!r} needs {need} pages, {self.kv_capacity - self.kv_used} of {self.kv_capacity} are free")
        self.kv_used += need

    def _kv_free(self, rid) -> None:
        pass  # recomputed below from the remaining requests

    def release(self, rid) -> None:
        tokens, _ = self.requests[rid]
        super().release(rid)
        self.kv_used -= tokens * self.kv_per_token


def fill(memory: _Memory, requests: Iterable[tuple[object, int, str | None]]) -> int:
    """Admit ``(request id, tokens, adapter)`` in order until the first that does not fit; how many were admitted."""
    n = 0
    for rid, tokens, adapter in requests:
        if not memory.fits(tokens, adapter):
            break
        memory.admit(rid, tokens, adapter)
        n += 1
    return n
