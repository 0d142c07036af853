"""Mixture of Shards (MoS; Wang et al., ICLR 2025): LoRA whose low-rank vectors are built from
shards drawn out of global pools shared by every layer.

For every *type* of adapted linear layer (BERT: query, key, value, attention output, FFN in,
FFN out; one type = one shape), MoS keeps two pools of trainable shards, one for the A side
(shards of length ``in / l``) and one for the B side (length ``out / l``). A layer's A (r x in)
is r rank vectors, each the concatenation of ``l`` shards picked from the A pool by a fixed
integer index matrix ``I_A`` (r x l) — the paper's "MoE-like router" is this index selection,
fixed at initialisation — and its B (out x r) likewise from the B pool through ``I_B``:

    A[k] = concat(pool_A[I_A[k, 0]], ..., pool_A[I_A[k, l-1]])      (k = 0 .. r-1)
    B[:, k] = concat(pool_B[I_B[k, 0]], ..., pool_B[I_B[k, l-1]])
    y = W x + (alpha / r) B A x                                          (linear: mergeable)

The pools hold exactly the parameters of LoRA of rank ``budget_rank`` on the same layers:
``n_layers * budget_rank * l`` shards per pool, so a layer's effective rank ``r`` may be far
above ``budget_rank`` at the same count. The four differentiation strategies are properties of
the index matrices only (``build_indices``), each switchable:

- **subset selection**: every layer draws its own subset of the public shards, in its own order
  (off: one subset and order, drawn once, used by every layer). It is a proper subset only when a
  layer's public slots ``r * l - private`` are fewer than the public pool, i.e. when ``r`` stays
  below the pool's vector count ``n_layers * budget_rank`` by enough to leave room for the
  private shards; above that every layer uses every public shard and the strategy only reorders
  them (``public_shares`` measures which);
- **pair dissociation**: B's index matrix is drawn independently of A's (off: ``I_B = I_A``, so
  the k-th vectors of A and B are always the same pair of pool entries);
- **vector sharding**: ``l > 1`` shards per rank vector, so combinations multiply (off: ``l = 1``,
  whole vectors are shared);
- **shard privatization**: a fraction of the pool is split into per-layer private blocks, used
  by their layer only and placed first in its slots (off: every shard public).

With all four off and ``r = n_layers * budget_rank`` every layer uses the whole pool in the
same order: one A and one B shared by all layers of a type (pure sharing, Tied-LoRA-like).

peft: MoS is not registered as a peft tuner — ``peft.register_peft_method`` accepts only names
already in peft's closed ``PeftType`` enum, and peft's LoRA dispatch builds every layer's
factors separately (no cross-layer pools). So this module offers the same surface by hand:
``inject(model, MoSConfig(target_modules=..., modules_to_save=...))`` replaces the targeted
``nn.Linear`` modules by name (a regex on the full name, as peft's ``target_modules`` string),
freezes everything but the pools and ``modules_to_save``; ``merge``/``unmerge`` add and remove
``(alpha / r) B A`` to the base weights; ``merge_and_unload`` returns plain linears.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

POOLS = "mos_pools"  # the attribute of the model that holds every pool (registered once)


@dataclass(frozen=True)
class MoSConfig:
    """One MoS adapter. ``r=None``: the pool's vector count per type (pure sharing's rank)."""

    target_modules: str  # regex, full match on the module's name (peft's string form)
    budget_rank: int  # parameter budget: LoRA of this rank on the same modules
    r: int | None = None  # effective rank of every layer's A and B
    shards_per_vector: int = 1  # l: vector sharding when > 1
    private_fraction: float = 0.0  # share of each layer's budget kept private (shard privatization)
    subset_selection: bool = True
    pair_dissociation: bool = True
    alpha: float = 16.0  # scaling alpha / r, as LoRA
    dropout: float = 0.0
    modules_to_save: tuple[str, ...] = ()  # names (any path component) that stay trainable, e.g. the head
    seed: int = 0  # index matrices and pool initialisation

    def __post_init__(self):
        if self.budget_rank < 1:
            raise ValueError(f"budget_rank: must be >= 1 (got {self.budget_rank})")
        if self.r is not None and self.r < 1:
            raise ValueError(f"r: must be >= 1 or None (got {self.r})")
        if self.shards_per_vector < 1:
            raise ValueError(f"shards_per_vector: must be >= 1 (got {self.shards_per_vector})")
        if not 0.0 <= self.private_fraction < 1.0:
            raise ValueError(f"private_fraction: must be in [0, 1) (got {self.private_fraction})")
        if not self.alpha > 0:
            raise ValueError(f"alpha: must be > 0 (got {self.alpha})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1) (got {self.dropout})")


@dataclass(frozen=True)
class Indices:
    """Index matrices of one layer type: ``a``, ``b`` [n_layers, r, l] into pools of ``n_shards``."""

    a: np.ndarray
    b: np.ndarray
    n_shards: int
    n_public: int
    n_private: int  # per layer; layer i owns ids n_public + i * n_private ... + n_private - 1

    def private_ids(self, layer: int) -> np.ndarray:
        start = self.n_public + layer * self.n_private
        return np.arange(start, start + self.n_private)


def pool_shards(n_layers: int, budget_rank: int, shards_per_vector: int) -> int:
    """Shards per pool at the budget of LoRA with rank ``budget_rank`` on ``n_layers`` layers."""
    return n_layers * budget_rank * shards_per_vector


def _fill(ids: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` entries from ``ids``: random permutations laid end to end (each id used
    ceil(count / len) times at most), so a layer uses as many distinct shards as it can."""
    if count == 0:  # private shards fill every slot
        return np.empty(0, dtype=ids.dtype)
    rounds = -(-count // len(ids))
    return np.concatenate([rng.permutation(ids) for _ in range(rounds)])[:count]


def build_indices(n_layers: int, budget_rank: int, r: int, shards_per_vector: int = 1, private_fraction: float = 0.0,
                  subset_selection: bool = True, pair_dissociation: bool = True, seed: int = 0) -> Indices:  # fmt: skip
    """The index matrices of one layer type (see the module docstring).

    A layer has ``r * l`` slots per side. Its private shards (``private_fraction`` of its share
    ``budget_rank * l`` of the pool) take the first slots, in order; the other slots take public
    shards. With subset selection each layer draws its own arrangement of the public shards
    (independent permutations, laid end to end, cut to its public slots: a proper subset when
    they are fewer than the public shards), without it one arrangement drawn once serves
    every layer; B draws its own (pair dissociation) or copies A's. With everything off the
    arrangement is the identity: every layer reads the pool in order.
    """
    l = shards_per_vector
    n_shards = pool_shards(n_layers, budget_rank, l)
    n_private = int(round(private_fraction * budget_rank * l))
    n_public = n_shards - n_layers * n_private
    slots = r * l
    if n_private > slots:
        raise ValueError(f"private_fraction: {n_private} private shards per layer exceed its {slots} slots (r * l)")
    if n_public < 1:
        raise ValueError(f"private_fraction: leaves no public shard (pool {n_shards}, {n_private} private per layer)")
    rng = np.random.default_rng([seed, n_layers, budget_rank, r, l])
    public = np.arange(n_public)
    identity = not (subset_selection or pair_dissociation or private_fraction > 0 or l > 1)

    def arrangement() -> np.ndarray:
        if identity:
            return np.resize(public, slots - n_private)
        return _fill(public, slots - n_private, rng)

    shared_a = arrangement() if not subset_selection else None
    shared_b = (arrangement() if pair_dissociation else shared_a) if not subset_selection else None
    a, b = [], []
    for layer in range(n_layers):
        own = np.arange(n_public + layer * n_private, n_public + (layer + 1) * n_private)
        pa = arrangement() if subset_selection else shared_a
        pb = (arrangement() if pair_dissociation else pa) if subset_selection else shared_b
        a.append(np.concatenate([own, pa]).reshape(r, l))
        b.append(np.concatenate([own, pb]).reshape(r, l))
    return Indices(np.stack(a), np.stack(b), n_shards, n_public, n_private)


class MoSPool(nn.Module):
    """The two shard pools of one layer type: ``a`` [n, in / l] and ``b`` [n, out / l]. A is
    initialised as LoRA's A (Kaiming-uniform over fan-in ``in``), B at zero: the adapted
    model starts as the base model, as LoRA does."""

    def __init__(self, n_shards: int, in_features: int, out_features: int, shards_per_vector: int, generator=None):
        super().__init__()
        l = shards_per_vector
        if in_features % l or out_features % l:
            raise ValueError(f"shards_per_vector: {l} must divide in_features {in_features} and out_features {out_features}")
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)) on [r, in], as nn.Linear and peft's LoRA A
        self.a = nn.Parameter(torch.empty(n_shards, in_features // l).uniform_(-bound, bound, generator=generator))
        self.b = nn.Parameter(torch.zeros(n_shards, out_features // l))


class MoSLinear(nn.Module):
    """A frozen ``nn.Linear`` plus the MoS update built from shared pools."""

    def __init__(self, base: nn.Linear, pool: MoSPool, idx_a: np.ndarray, idx_b: np.ndarray, alpha: float, dropout: float,
                 n_public: int | None = None):  # fmt: skip
        super().__init__()
        self.n_public = n_public  # public shards of the pool (ids below it); None: all
        self.base_layer = base
        self.__dict__["pool"] = pool  # a reference: the pool is registered once, on the model
        self.register_buffer("idx_a", torch.as_tensor(idx_a, dtype=torch.long), persistent=True)
        self.register_buffer("idx_b", torch.as_tensor(idx_b, dtype=torch.long), persistent=True)
        self.r = int(idx_a.shape[0])
        self.scaling = alpha / self.r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [r, in], B [out, r]): shards gathered by the index matrices and concatenated."""
        a = self.pool.a[self.idx_a].reshape(self.r, -1)
        b = self.pool.b[self.idx_b].reshape(self.r, -1).T
        return a, b

    def delta_weight(self) -> torch.Tensor:
        a, b = self.factors()
        return (b @ a) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        a, b = self.factors()
        return out + (self.dropout(x) @ a.T.to(x.dtype)) @ b.T.to(x.dtype) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base_layer.weight += self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base_layer.weight -= self.delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False


def _type_key(name: str) -> str:
    """The layer type of a module name: its numeric path components (layer indices) removed."""
    return ".".join(part for part in name.split(".") if not part.isdigit())


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def inject(model: nn.Module, cfg: MoSConfig) -> nn.Module:
    """Replace every ``nn.Linear`` whose name fully matches ``cfg.target_modules`` by a
    ``MoSLinear`` (in place; returns the model). One pool pair per layer type, registered as
    ``model.mos_pools``; every parameter but the pools and ``cfg.modules_to_save`` is frozen."""
    if hasattr(model, POOLS):
        raise ValueError("model: already has MoS pools (one adapter per model)")
    pattern = re.compile(cfg.target_modules)
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
    if not targets:
        raise ValueError(f"target_modules: {cfg.target_modules!r} matches no nn.Linear of the model")
    groups: dict[str, list[tuple[str, nn.Linear]]] = {}
    for name, module in targets:
        groups.setdefault(_type_key(name), []).append((name, module))
    for param in model.parameters():
        param.requires_grad_(False)
    generator = torch.Generator().manual_seed(cfg.seed)
    pools = nn.ModuleDict()
    for g, (key, members) in enumerate(groups.items()):
        shapes = {(m.in_features, m.out_features) for _, m in members}
        if len(shapes) != 1:
            raise ValueError(f"target_modules: layers of type {key} differ in shape {sorted(shapes)}")
        (fan_in, fan_out), n_layers = shapes.pop(), len(members)
        r = cfg.r if cfg.r is not None else n_layers * cfg.budget_rank
        idx = build_indices(n_layers, cfg.budget_rank, r, cfg.shards_per_vector, cfg.private_fraction,
                            cfg.subset_selection, cfg.pair_dissociation, seed=cfg.seed + 7919 * g)  # fmt: skip
        pool = MoSPool(idx.n_shards, fan_in, fan_out, cfg.shards_per_vector, generator=generator)
        pool.to(device=members[0][1].weight.device)
        pools[key.replace(".", "_")] = pool
        for layer, (name, module) in enumerate(members):
            adapted = MoSLinear(module, pool, idx.a[layer], idx.b[layer], cfg.alpha, cfg.dropout, idx.n_public)
            _set_module(model, name, adapted)
    model.add_module(POOLS, pools)
    for name, param in model.named_parameters():
        if any(part in cfg.modules_to_save for part in name.split(".")):
            param.requires_grad_(True)
    return model


def mos_layers(model: nn.Module) -> Iterator[tuple[str, MoSLinear]]:
    for name, module in model.named_modules():
        if isinstance(module, MoSLinear):
            yield name, module


def merge(model: nn.Module) -> nn.Module:
    for _, layer in mos_layers(model):
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for _, layer in mos_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every update into its base weight and put the plain ``nn.Linear`` back; the pools go."""
    for name, layer in list(mos_layers(model)):
        layer.merge()
        _set_module(model, name, layer.base_layer)
    if hasattr(model, POOLS):
        delattr(model, POOLS)
    return model


def lora_param_count(model: nn.Module, target_modules: str, r: int) -> int:
    """Parameters of LoRA with rank ``r`` on every ``nn.Linear`` matching ``target_modules``:
    r (in + out) per layer."""
    pattern = re.compile(target_modules)
    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and pattern.fullmatch(n))  # fmt: skip


def pool_param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in getattr(model, POOLS).parameters())


@torch.no_grad()
def factor_ranks(model: nn.Module) -> list[int]:
    """Numerical rank of every layer's A as initialised (B starts at zero): what vector
    sharding and subset selection buy when r exceeds the pool's vector count."""
    return [int(torch.linalg.matrix_rank(layer.factors()[0].float())) for _, layer in mos_layers(model)]


def public_shares(model: nn.Module) -> list[float]:
    """Per layer and side (A, B): the share of the public pool its index matrix uses. Below 1:
    subset selection picks a proper subset; 1: the layer uses every public shard (reordering only)."""
    shares = []
    for _, layer in mos_layers(model):
        n_public = layer.n_public if layer.n_public is not None else layer.pool.a.shape[0]
        for idx in (layer.idx_a, layer.idx_b):
            shares.append(len(torch.unique(idx[idx < n_public])) / n_public)
    return shares
