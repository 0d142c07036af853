"""Paper 43 (P/D-Serve): the KV-cache transfer, measured for real on this machine.

A request's KV cache (``n_layers`` x K and V, ``heads`` x ``head_dim``, one dtype) is copied
from a prefill buffer into a decode buffer in one of two ways:

- **blockwise**: the cache lives in 16-token blocks scattered over a paged pool (vLLM's
  layout); the transfer is one ``copy_`` per block per layer (K and V of the block together);
- **contiguous**: P/D-Serve's block-free layout: the request's whole cache is one buffer and
  the transfer is one ``copy_``.

Both move the same bytes; the blockwise copy pays the per-operation cost many more times. The
α-β model ``seconds = α · ops + bytes / β`` (α: per operation, β: bandwidth) is fitted to both
series at once (:func:`fit_alpha_beta`) and drives the simulator's transfer time
(:class:`paper43.pdserve.Transfer`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from shared import timing

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def copy_ops(tokens: int, block_tokens: int, n_layers: int, contiguous: bool) -> int:
    """Copy operations of one request's transfer: 1 (contiguous) or blocks x layers (blockwise)."""
    return 1 if contiguous else -(-tokens // block_tokens) * n_layers


def kv_bytes(tokens: int, n_layers: int, heads: int, head_dim: int, element_size: int) -> int:
    """Bytes of one request's K and V over all layers."""
    return 2 * n_layers * heads * head_dim * tokens * element_size


def _copiers(tokens, n_layers, heads, head_dim, block_tokens, dtype, seed):
    """Two callables doing the transfer of one ``tokens``-token cache, blockwise and contiguous."""
    gen = torch.Generator().manual_seed(seed)
    n_blocks = -(-tokens // block_tokens)
    pool_blocks = 4 * n_blocks  # the request's blocks are scattered over a larger pool
    shape = (pool_blocks, 2, heads, block_tokens, head_dim)
    src = [torch.randn(shape, generator=gen).to(dtype) for _ in range(n_layers)]
    dst = [torch.empty(shape, dtype=dtype) for _ in range(n_layers)]
    src_ids = torch.randperm(pool_blocks, generator=gen)[:n_blocks].tolist()
    dst_ids = torch.randperm(pool_blocks, generator=gen)[:n_blocks].tolist()
    flat_src = torch.randn(n_layers * 2 * heads * n_blocks * block_tokens * head_dim, generator=gen).to(dtype)
    flat_dst = torch.empty_like(flat_src)

    def blockwise():
        for layer in range(n_layers):
            s, d = src[layer], dst[layer]
            for i, j in zip(src_ids, dst_ids):
                d[j].copy_(s[i])

    def contiguous():
        flat_dst.copy_(flat_src)

    return blockwise, contiguous


def measure(token_counts, *, n_layers: int, heads: int, head_dim: int, block_tokens: int, dtype: str,
            repeats: int, warmup: int = 1, seed: int = 0, progress=None) -> pd.DataFrame:
    """Median seconds of the blockwise and contiguous transfer of one request's KV cache for each
    token count (``shared.timing.benchmark``: interleaved, warm-up, median). One row per
    (tokens, layout) with the copy operations and bytes."""
    if dtype not in DTYPES:
        raise ValueError(f"kvcopy.measure dtype={dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
    rows = []
    counts = list(token_counts)
    for tokens in (progress(counts, desc="KV copy sizes") if progress else counts):
        # whole blocks: both layouts move the same bytes
        tokens = -(-int(tokens) // block_tokens) * block_tokens
        blockwise, contiguous = _copiers(tokens, n_layers, heads, head_dim, block_tokens, DTYPES[dtype], seed)
        res = timing.benchmark({"blockwise": blockwise, "contiguous": contiguous}, repeats=repeats, warmup=warmup)
        nbytes = kv_bytes(tokens, n_layers, heads, head_dim, torch.tensor([], dtype=DTYPES[dtype]).element_size())
        for layout, t in res.items():
            rows.append({"tokens": tokens, "layout": layout, "ops": copy_ops(tokens, block_tokens, n_layers,
                                                                              layout == "contiguous"),
                         "bytes": nbytes, "seconds": t.median_s, "q25_s": t.q25_s, "q75_s": t.q75_s})
    return pd.DataFrame(rows)


def fit_alpha_beta(ops, nbytes, seconds) -> tuple[float, float]:
    """Least squares of ``seconds = α · ops + bytes / β`` on relative errors (every size counts
    alike); returns (α seconds per operation, β bytes per second). Both coefficients >= 0 (NNLS)."""
    from scipy.optimize import nnls

    ops, nbytes, seconds = (np.asarray(x, dtype=np.float64) for x in (ops, nbytes, seconds))
    if len(seconds) < 2 or np.any(seconds <= 0):
        raise ValueError("fit_alpha_beta: need at least two timings, all > 0 s")
    design = np.column_stack([ops, nbytes]) / seconds[:, None]
    (alpha, inv_beta), _ = nnls(design, np.ones_like(seconds))
    if inv_beta <= 0:
        raise ValueError("fit_alpha_beta: the timings show no per-byte cost (bandwidth would be infinite)")
    return float(alpha), float(1.0 / inv_beta)
