"""Per-token decoding with a real KV cache: dense attention vs block top-k attention.

A small random-init decoder (RMSNorm, GQA attention, SwiGLU; no embeddings: one hidden vector in,
one out) decodes token by token against `BlockKVCache`, a preallocated cache of keys and values per
layer that also keeps one summary key per block of ``block`` tokens (the mean of its keys, kept up to
date as tokens are appended). Dense attention reads every cached key and value. Block top-k
attention scores the block summaries with the query (summed over the query heads of a KV group, so
the group reads the same blocks), gathers the ``topk`` best complete blocks plus the current
(partial) block, and attends over those tokens only: its reads per token are T / block summaries +
(topk + 1) x block tokens instead of T. With ``topk`` at least the number of complete blocks it
attends every token and equals dense attention (tested).

Timing is a measurement of this PyTorch code on the machine it runs on (see notebook 02); it is not
the authors' flashinfer kernel.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import nn

Kind = Literal["dense", "topk"]


class BlockKVCache:
    """Keys and values [layers, kv_heads, capacity, head_dim] and block-mean keys
    [layers, kv_heads, capacity // block + 1, head_dim]; ``length`` tokens are valid."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, capacity: int, block: int, dtype=torch.float32, device="cpu"):
        self.block, self.capacity, self.length = block, capacity, 0
        shape = (layers, kv_heads, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.kmean = torch.zeros(layers, kv_heads, capacity // block + 1, head_dim, dtype=dtype, device=device)

    def fill_random(self, length: int, seed: int = 0) -> None:
        """Make ``length`` tokens of random keys and values the cached context (decode latency does
        not depend on the values; block means computed from them)."""
        if length > self.capacity:
            raise ValueError(f"length: {length} exceeds the cache capacity {self.capacity}")
        g = torch.Generator(device="cpu").manual_seed(seed)
        for buf in (self.k, self.v):
            buf[:, :, :length] = torch.randn(buf[:, :, :length].shape, generator=g).to(buf)
        full = length // self.block
        self.kmean[:, :, :full] = self.k[:, :, : full * self.block].unflatten(2, (full, self.block)).mean(3)
        self.truncate(length)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` tokens (recomputes the summary of the partial last block)."""
        self.length = length
        b, n = divmod(length, self.block)
        if n:
            self.kmean[:, :, b] = self.k[:, :, b * self.block : length].mean(2)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write one token's k, v [kv_heads, head_dim] of ``layer`` at position ``length`` and update
        its block's mean (the position advances in `advance`, after every layer wrote)."""
        pos = self.length
        if pos >= self.capacity:
            raise ValueError(f"cache full: capacity {self.capacity}")
        self.k[layer, :, pos], self.v[layer, :, pos] = k, v
        b, n = divmod(pos, self.block)
        self.kmean[layer, :, b] = (self.kmean[layer, :, b] * n + k) / (n + 1) if n else k

    def advance(self) -> None:
        self.length += 1


def attend_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention of q [kv, g, dh] (g query heads per KV head) over k, v [kv, T, dh]."""
    scores = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    return scores.softmax(-1) @ v


def select_blocks(q: torch.Tensor, kmean: torch.Tensor, length: int, block: int, topk: int) -> torch.Tensor:
    """Indices [kv, <= topk + 1] of the blocks to attend: the ``topk`` complete blocks whose mean key
    scores highest against the group's queries (summed over its heads), plus the current block."""
    full = length // block
    current = torch.full((q.shape[0], 1), full if length % block else full - 1, dtype=torch.long, device=q.device)
    n_candidates = full if length % block else full - 1
    if n_candidates <= 0:
        return current
    scores = (q @ kmean[:, :n_candidates].transpose(1, 2)).sum(1)  # [kv, n_candidates]
    top = scores.topk(min(topk, n_candidates), dim=-1).indices
    return torch.cat([top, current], dim=1)


def attend_topk(q, cache: BlockKVCache, layer: int, topk: int) -> torch.Tensor:
    """Block top-k attention of q [kv, g, dh] over the cache of ``layer`` (its first ``length`` tokens)."""
    length, block = cache.length, cache.block
    blocks = select_blocks(q, cache.kmean[layer], length, block, topk)
    idx = (blocks[..., None] * block + torch.arange(block, device=q.device)).flatten(1)  # [kv, S] token positions
    valid = idx < length  # the current block may be partial
    idx = idx.clamp(max=length - 1)
    gather = idx[..., None].expand(-1, -1, q.shape[-1])
    k = cache.k[layer].gather(1, gather)
    v = cache.v[layer].gather(1, gather)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    return scores.softmax(-1) @ v


class Decoder(nn.Module):
    """A random-init pre-norm decoder without embeddings: `step` maps one hidden vector to the next."""

    def __init__(self, layers: int, d_model: int, heads: int, kv_heads: int, d_ff: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, d_model // heads
        dh = self.head_dim
        self.qkv = nn.ModuleList(nn.Linear(d_model, (heads + 2 * kv_heads) * dh, bias=False) for _ in range(layers))
        self.o = nn.ModuleList(nn.Linear(heads * dh, d_model, bias=False) for _ in range(layers))
        self.up = nn.ModuleList(nn.Linear(d_model, 2 * d_ff, bias=False) for _ in range(layers))
        self.down = nn.ModuleList(nn.Linear(d_ff, d_model, bias=False) for _ in range(layers))
        self.norm1 = nn.ModuleList(nn.RMSNorm(d_model) for _ in range(layers))
        self.norm2 = nn.ModuleList(nn.RMSNorm(d_model) for _ in range(layers))

    @property
    def layers(self) -> int:
        return len(self.qkv)

    def cache(self, capacity: int, block: int) -> BlockKVCache:
        w = self.qkv[0].weight
        return BlockKVCache(self.layers, self.kv_heads, self.head_dim, capacity, block, w.dtype, w.device)

    @torch.inference_mode()
    def step(self, x: torch.Tensor, cache: BlockKVCache, kind: Kind = "dense", topk: int = 16) -> torch.Tensor:
        """One token: x [d_model] -> [d_model]; appends the token's keys and values to ``cache``."""
        h, kv, dh = self.heads, self.kv_heads, self.head_dim
        for i in range(self.layers):
            qkv = self.qkv[i](self.norm1[i](x))
            q = qkv[: h * dh].view(kv, h // kv, dh)
            k, v = qkv[h * dh :].view(2, kv, dh)
            cache.append(i, k, v)
            n = cache.length + 1  # the new token included
            if kind == "dense":
                a = attend_dense(q, cache.k[i, :, :n], cache.v[i, :, :n])
            else:
                cache.length = n  # attend_topk reads the first `length` tokens
                a = attend_topk(q, cache, i, topk)
                cache.length = n - 1
            x = x + self.o[i](a.reshape(h * dh))
            gate, up = self.up[i](self.norm2[i](x)).chunk(2)
            x = x + self.down[i](nn.functional.silu(gate) * up)
        cache.advance()
        return x

    def decode(self, x: torch.Tensor, cache: BlockKVCache, steps: int, kind: Kind = "dense", topk: int = 16) -> torch.Tensor:
        for _ in range(steps):
            x = self.step(x, cache, kind, topk)
        return x


def linear_fit(x, y) -> dict[str, float]:
    """Least-squares y = a + b x and its R^2 (scipy.stats.linregress)."""
    from scipy.stats import linregress

    fit = linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return {"intercept": float(fit.intercept), "slope": float(fit.slope), "r2": float(fit.rvalue**2)}


def latency_table(model: Decoder, contexts, *, block: int, topk: int, steps: int, repeats: int, warmup: int,
                  seed: int = 0, device: str = "cpu", progress=None):
    """Per-token decode latency (median seconds) of dense and block top-k attention at each context,
    one cache filled once with max(contexts) random tokens and truncated before every call;
    timed interleaved (shared.timing). Returns a DataFrame: kind, context, s_per_token, q25, q75."""
    import pandas as pd

    from shared import timing

    cache = model.cache(max(contexts) + steps + 1, block)
    cache.fill_random(max(contexts), seed)
    x = torch.randn(model.o[0].out_features, generator=torch.Generator().manual_seed(seed)).to(cache.k)

    def call(kind: Kind, context: int):
        def fn():
            cache.truncate(context)
            model.decode(x, cache, steps, kind, topk)
        return fn

    fns = {(kind, t): call(kind, t) for t in contexts for kind in ("dense", "topk")}
    named = {f"{k}@{t}": f for (k, t), f in fns.items()}
    res = timing.benchmark(named, repeats=repeats, warmup=warmup, device=device, progress=progress)
    rows = [{"kind": k, "context": t, "s_per_token": res[f"{k}@{t}"].median_s / steps,
             "q25_s": res[f"{k}@{t}"].q25_s / steps, "q75_s": res[f"{k}@{t}"].q75_s / steps} for k, t in fns]
    return pd.DataFrame(rows)
