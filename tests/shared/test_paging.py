"""shared.paging: one page pool for KV cache and adapters of any rank; the fixed-split baseline."""

import random

import pytest
import torch

from shared import multilora, paging

DIM = 16


def _store(ranks, modules=("l0.q", "l0.v"), seed=0):
    gen = torch.Generator().manual_seed(seed)
    store = multilora.AdapterStore()
    for i, r in enumerate(ranks):
        store.add(f"a{i}", {m: (torch.randn(r, DIM, generator=gen), torch.randn(DIM, r, generator=gen), 2.0) for m in modules})
    return store


def test_alloc_free_invariants_and_non_contiguous():
    pool = paging.PagePool(20, DIM)
    a = pool.alloc(5, "a")
    pool.alloc(5, "b")
    assert pool.n_free == 10 and pool.n_used == 10
    assert pool.free("a") == 5 and pool.n_free == 15
    c = pool.alloc(8, "c")  # reuses a's pages, then fresh ones: not one contiguous run
    assert set(a.tolist()) <= set(c.tolist())
    assert (c.diff() != 1).any()
    every = torch.cat([pool.pages(o) for o in pool.owners()]).tolist()
    assert len(every) == len(set(every)) == pool.n_used  # no page owned twice
    assert pool.free("nobody") == 0


def test_gather_returns_the_stored_vectors():
    pool = paging.PagePool(12, DIM)
    idx = pool.alloc(4, "x")
    v = torch.randn(4, DIM)
    pool.write(idx, v)
    assert torch.equal(pool.gather(idx), v)
    short = torch.randn(4, DIM - 3)  # narrower vectors are zero-padded
    pool.write(idx, short)
    assert torch.equal(pool.gather(idx, DIM - 3), short)
    assert torch.equal(pool.gather(idx)[:, DIM - 3 :], torch.zeros(4, 3))


def test_pool_full_error_names_request_and_free():
    pool = paging.PagePool(10, DIM)
    pool.alloc(7, "a")
    with pytest.raises(paging.PoolFull, match=r"^pool: owner 'b' needs 5 pages, 3 of 10 are free$"):
        pool.alloc(5, "b")


def test_adapters_of_mixed_ranks_and_kv_share_the_pool_without_leaks():
    ranks = [8, 16, 32, 64]
    store = _store(ranks)
    pool = paging.PagePool(2000, DIM)
    mem = paging.UnifiedMemory(pool, store, kv_per_token=paging.kv_pages_per_token(2))
    assert mem.adapter_sizes == {f"a{i}": 2 * 2 * r for i, r in enumerate(ranks)}
    rng = random.Random(0)
    running = {}
    for step in range(300):
        if running and (rng.random() < 0.4 or len(running) > 6):
            rid = rng.choice(sorted(running))
            mem.release(rid)
            del running[rid]
        else:
            adapter, tokens = f"a{rng.randrange(4)}", rng.randint(1, 40)
            if mem.fits(tokens, adapter):
                mem.admit(step, tokens, adapter)
                running[step] = adapter
        for rid in list(running):
            if mem.fits(1) and rng.random() < 0.5:
                mem.extend(rid)
        # invariant: the pool's used pages are exactly the KV of running requests + resident adapters
        assert pool.n_used == mem.data_pages
        for a in mem.resident:  # adapters in the pool are exactly the store's weights
            for module, (A, B) in mem.adapter_weights(a).items():
                w = store[a][module]
                assert torch.equal(A, w.A) and torch.equal(B, w.B)
    for rid in list(running):
        mem.release(rid)
    for a in list(mem.resident):
        pool.free(("adapter", a))
    assert pool.n_free == pool.n_pages  # no page leaked


def test_lru_eviction_never_evicts_an_adapter_in_use():
    store = _store([8, 8, 8, 8])  # 32 pages each
    pool = paging.PagePool(100, DIM)
    mem = paging.UnifiedMemory(pool, store, kv_per_token=2)
    mem.admit("r0", 2, "a0")  # a0 in use
    mem.admit("r1", 2, "a1")
    mem.release("r1")  # a1 resident, unused
    mem.admit("r2", 2, "a2")  # 96 + 12 > 100: evicts a1 (the LRU unused), not a0
    assert list(mem.resident) == ["a0", "a2"] and mem.evictions == 1
    with pytest.raises(paging.PoolFull, match=r"adapter 'a3' \(32 pages\).*are free"):
        mem.admit("r3", 2, "a3")  # a0 and a2 are both in use: nothing may go
    assert "a0" in mem.resident and "a2" in mem.resident
    assert not mem.fits(2, "a3")


def test_unified_utilisation_beats_separate_pools_under_mixed_ranks():
    ranks = [64, 32, 16, 8] * 4
    store = _store(ranks)
    sizes = {n: paging.adapter_pages(store[n]) for n in store.names}
    rng = random.Random(1)
    trace = [(i, rng.randint(8, 64), f"a{rng.randrange(len(ranks))}") for i in range(400)]
    budget = 6000
    uni = paging.UnifiedMemory(paging.PagePool(budget, DIM, materialize=False), adapter_sizes=sizes, kv_per_token=4)
    sep = paging.SeparateMemory.split(budget, 0.5, sizes, kv_per_token=4)
    n_uni, n_sep = paging.fill(uni, trace), paging.fill(sep, trace)
    assert sep.reserved_pages <= budget
    assert uni.utilisation >= 0.9 and sep.utilisation <= 0.7
    assert n_uni > n_sep


def test_separate_pools_errors_and_slots():
    sizes = {"big": 64, "small": 8}
    sep = paging.SeparateMemory(kv_pages=10, adapter_slots=1, adapter_sizes=sizes, kv_per_token=2)
    sep.admit("r0", 2, "small")
    assert sep.reserved_pages == 74 and sep.data_pages == 4 + 8
    with pytest.raises(paging.PoolFull, match="adapter pool: adapter 'big' needs 1 slot"):
        sep.admit("r1", 1, "big")
    with pytest.raises(paging.PoolFull, match="kv pool: request 'r2' needs 20 pages, 6 of 10 are free"):
        sep.admit("r2", 10, "small")
    sep.release("r0")
    sep.admit("r1", 1, "big")  # the unused small adapter is evicted from the only slot
    assert list(sep.resident) == ["big"] and sep.kv_used == 2
