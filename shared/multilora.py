"""Many LoRA adapters on one base model, in one batch: every request uses its own adapter (or none).

The base model runs once for the whole batch; each adapted ``nn.Linear`` then adds its
requests' LoRA terms ``scale_i * (x_i A_i^T) B_i^T`` on top of the base output (the split of
Punica and S-LoRA). LoRA is only ~2r/d of the adapted layer's FLOPs, so what costs is how the
per-request add-on is organised, not its arithmetic. Two paths, both exact against peft:

- ``segment`` (Punica's SGMV, S-LoRA's prefill kernel, in plain PyTorch): the requests are
  sorted by adapter ONCE per batch (a :class:`Plan`, shared by every layer), so each adapter's
  tokens are one contiguous slice; per adapter: one small GEMM into rank r, then an in-place
  ``addmm_`` into the base output. No per-token weight copies, no fancy-index scatter (what
  makes peft's ``adapter_names=`` path slow: a Python index list, a copy and an ``index_put``
  per adapter per layer). A batch already grouped by adapter (a serving loop can order its
  batch so) works on views of the layer's input and output; otherwise the input is gathered
  once per layer into sorted order and the add-on scattered back with one ``index_add_``.
- ``bmm`` (Punica's BGMV, for decode): the adapters' A and B are gathered PER REQUEST (not
  per token, as vLLM's CPU path does: T times less copying), zero-padded to the batch's
  largest rank (exact: padded rows/columns add zeros), and applied with two batched matmuls,
  the second in place (``baddbmm_``). The gathered weights live in the plan, so a decode loop
  under one plan pays for the gather once, at its first step. No Python loop over adapters.

``path="auto"`` takes ``bmm`` for batches of at most :data:`BMM_MAX_TOKENS` tokens per
request (decode steps) and ``segment`` otherwise. Measured on the benchmark's d=512 Llama, one
thread (a loaded 2-core CPU): a decode step of 64 requests with 64 adapters costs +4-7% over
the base model with bmm and a held plan, +19% with bmm and a new plan (the gather), +15-17%
with segment; in prefill (32 x 64 tokens) both are within noise of +2-3%.

Adapters live in host memory in an :class:`AdapterStore` (CPU tensors, any rank, any subset
of the model's linears) and are copied to the model's device only when a batch needs them
(an LRU of ``device_capacity`` adapters on the device; on the CPU, loading is free).

Usage::

    store = AdapterStore.from_peft(peft_model)           # or store.add(...) / add_peft_state_dict(...)
    ml = attach(model, store)                             # wraps the adapted nn.Linear layers in place
    with ml.batch(["a", None, "b", "a"]):                 # one adapter name (or None) per request
        out = model(input_ids, use_cache=True)            # prefill ...
        out = model(next_ids, past_key_values=out.past_key_values)   # ... and decode, same plan
    logits = ml(input_ids, adapter_ids=[...]).logits     # the same, for one call

Outside a ``batch`` context the wrapped layers are the plain base layers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

PATHS = ("auto", "segment", "bmm")
BMM_MAX_TOKENS = 1  # path="auto": bmm for requests of <= this many tokens (decode), else segment
DEVICE_CAPACITY = 64  # adapters kept on a non-CPU device at once (LRU); host memory holds all


# ----------------------------------------------------------------------------- the adapters
@dataclass(frozen=True)
class LoraWeights:
    """One adapted linear of one adapter: delta(x) = scale * (x @ A.T) @ B.T."""

    A: torch.Tensor  # [r, in_features]
    B: torch.Tensor  # [out_features, r]
    scale: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def to(self, device, dtype=None) -> LoraWeights:
        return LoraWeights(self.A.to(device, dtype), self.B.to(device, dtype), self.scale)


class AdapterStore:
    """LoRA adapters by name, in host memory: name -> {module name: LoraWeights}.

    Module names are the base model's (``model.layers.0.self_attn.q_proj``). Adapters may have
    different ranks and adapt different modules.
    """

    def __init__(self, device_capacity: int = DEVICE_CAPACITY):
        if device_capacity < 1:
            raise ValueError(f"device_capacity: must be >= 1, got {device_capacity}")
        self.device_capacity = device_capacity
        self._adapters: dict[str, dict[str, LoraWeights]] = {}
        self._on_device: OrderedDict[tuple[str, str, str], dict[str, LoraWeights]] = OrderedDict()  # (name, device, dtype)

    def __len__(self) -> int:
        return len(self._adapters)

    def __contains__(self, name) -> bool:
        return name in self._adapters

    @property
    def names(self) -> list[str]:
        return list(self._adapters)

    def modules(self) -> set[str]:
        """Every module name some adapter adapts."""
        return {m for weights in self._adapters.values() for m in weights}

    def __getitem__(self, name: str) -> dict[str, LoraWeights]:
        if name not in self._adapters:
            some = ", ".join(repr(n) for n in list(self._adapters)[:3])
            more = ", ..." if len(self) > 3 else ""
            raise KeyError(f"adapter: unknown adapter {name!r}; the store has {len(self)} ({some}{more})")
        return self._adapters[name]

    def add(self, name: str, weights: Mapping[str, LoraWeights | tuple]) -> None:
        """Add (or replace) adapter ``name``: {module name: LoraWeights or (A, B, scale)}."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: an adapter name must be a non-empty string, got {name!r}")
        if not weights:
            raise ValueError(f"adapter {name!r}: no modules given")
        host = {}
        for module, w in weights.items():
            A, B, scale = (w.A, w.B, w.scale) if isinstance(w, LoraWeights) else w
            if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
                raise ValueError(
                    f"adapter {name!r} module {module!r}: rank mismatch, lora_A {tuple(A.shape)} needs [r, in] and "
                    f"lora_B {tuple(B.shape)} [out, r] with the same r"
                )
            # host memory, off the autograd graph (serving never trains these); B is kept as the
            # transpose of a contiguous [r, out] tensor, the layout both paths multiply by
            A, B = A.detach().to("cpu").contiguous(), B.detach().to("cpu").T.contiguous().T
            host[module] = LoraWeights(A, B, float(scale))
        self._adapters[name] = host
        for key in [k for k in self._on_device if k[0] == name]:  # a replaced adapter's device copy is stale
            del self._on_device[key]

    def add_peft_state_dict(self, name: str, state_dict: Mapping[str, torch.Tensor], config) -> None:
        """Add an adapter from peft's ``get_peft_model_state_dict(model, adapter_name=...)`` and its
        ``LoraConfig`` (lora_alpha, use_rslora, rank_pattern and alpha_pattern are honoured)."""
        from peft.utils.other import get_pattern_key

        _check_plain_lora(name, config)
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state_dict.items():
            for part in ("lora_A", "lora_B"):
                if f".{part}." in key:
                    module = _base_module_name(key.split(f".{part}.")[0])
                    pairs.setdefault(module, {})[part] = tensor
        weights = {}
        for module, pair in pairs.items():
            if set(pair) != {"lora_A", "lora_B"}:
                raise ValueError(f"adapter {name!r} module {module!r}: state dict has {sorted(pair)}, needs lora_A and lora_B")
            rank = pair["lora_A"].shape[0]
            want = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), module), config.r)
            if rank != want:
                raise ValueError(
                    f"adapter {name!r} module {module!r}: rank mismatch, weights have r={rank}, config says r={want}"
                )
            alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), config.lora_alpha)
            scale = alpha / rank**0.5 if config.use_rslora else alpha / rank
            weights[module] = (pair["lora_A"], pair["lora_B"], scale)
        self.add(name, weights)

    @classmethod
    def from_peft(cls, peft_model, names: Iterable[str] | None = None, **kw) -> AdapterStore:
        """A store with the LoRA adapters of a peft model (all of them, or ``names``), read from its
        layers (so the scales are exactly peft's, whatever patterns the configs used)."""
        from peft.tuners.lora import LoraLayer

        store = cls(**kw)
        found: dict[str, dict[str, LoraWeights]] = {}
        for module_name, layer in peft_model.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            for adapter in layer.lora_A:
                if adapter in layer.lora_variant or layer.lora_bias.get(adapter, False):
                    raise ValueError(f"adapter {adapter!r}: only plain LoRA is supported (no DoRA/variants, no lora_bias)")
                if not isinstance(layer.get_base_layer(), nn.Linear):
                    raise ValueError(f"adapter {adapter!r} module {module_name!r}: only nn.Linear base layers are supported")
                w = LoraWeights(layer.lora_A[adapter].weight, layer.lora_B[adapter].weight, layer.scaling[adapter])
                found.setdefault(adapter, {})[_base_module_name(module_name)] = w
        wanted = list(found) if names is None else list(names)
        for adapter in wanted:
            if adapter not in found:
                raise KeyError(f"names: the peft model has no LoRA adapter {adapter!r}; it has {sorted(found)}")
            store.add(adapter, found[adapter])
        return store

    def load(self, names: Sequence[str], device, dtype=torch.float32) -> list[dict[str, LoraWeights]]:
        """The weights of ``names`` on ``device`` in ``dtype`` (copied from host memory on demand,
        LRU-cached)."""
        device = torch.device(device)
        if device.type == "cpu" and all(w.A.dtype == dtype for n in names for w in self[n].values()):
            return [self[n] for n in names]  # already there: no copy, no cache
        if len(set(names)) > self.device_capacity:
            need = len(set(names))
            raise ValueError(f"device_capacity: a batch needs {need} adapters on {device}, capacity is {self.device_capacity}")
        out = []
        for n in names:
            key = (n, str(device), str(dtype))
            if key in self._on_device:
                self._on_device.move_to_end(key)
            else:
                self._on_device[key] = {m: w.to(device, dtype) for m, w in self[n].items()}
                while len(self._on_device) > self.device_capacity:
                    self._on_device.popitem(last=False)
            out.append(self._on_device[key])
        return out


def _base_module_name(peft_name: str) -> str:
    """peft's module path -> the base model's (``base_model.model.X`` -> ``X``)."""
    return peft_name.removeprefix("base_model.model.")


def _check_plain_lora(name: str, config) -> None:
    if getattr(config, "use_dora", False) or getattr(config, "lora_bias", False):
        raise ValueError(f"adapter {name!r}: only plain LoRA is supported (use_dora and lora_bias must be False)")


# ----------------------------------------------------------------------------- one batch
class Plan:
    """How one batch's requests map to adapters; built once per batch, used by every layer.

    ``adapter_ids``: one adapter name (or None: base model only) per request (batch row).
    """

    def __init__(
        self, adapter_ids: Sequence[str | None], store: AdapterStore, device, path: str = "auto", dtype=torch.float32
    ):
        if path not in PATHS:
            raise ValueError(f"path: must be one of {PATHS}, got {path!r}")
        ids = list(adapter_ids)
        for i, a in enumerate(ids):
            if a is not None and a not in store:
                raise KeyError(f"adapter_ids[{i}]: unknown adapter {a!r}; the store has {len(store)} adapters")
        self.path, self.n_requests, self.applied = path, len(ids), 0
        self.active = list(dict.fromkeys(a for a in ids if a is not None))  # distinct adapters, first-seen order
        self.weights = store.load(self.active, device, dtype)  # in the model's dtype
        slot_of = {a: s for s, a in enumerate(self.active)}
        slots = [slot_of[a] if a is not None else -1 for a in ids]

        # segment path: stable sort of the requests by slot (base-only requests first, skipped)
        order = sorted(range(len(ids)), key=lambda i: slots[i])
        self.segments: list[tuple[int, int, int]] = []  # (start, end, slot) in sorted request order
        for pos, i in enumerate(order):
            if slots[i] < 0:
                continue
            if self.segments and self.segments[-1][2] == slots[i]:
                self.segments[-1] = (self.segments[-1][0], pos + 1, slots[i])
            else:
                self.segments.append((pos, pos + 1, slots[i]))
        first = self.segments[0][0] if self.segments else len(ids)
        # Requests already grouped by adapter (each adapter's requests consecutive, in any order
        # of adapters): the segments are runs of the original order, no gather/scatter needed.
        runs = _runs(slots)
        self.grouped = len(runs) == len(self.segments)
        if self.grouped:
            self.segments = runs
            self.order = None
        else:
            self.order = torch.tensor(order[first:], device=device)  # requests with an adapter, sorted
            self.segments = [(s - first, e - first, slot) for s, e, slot in self.segments]
        self.slots = torch.tensor(slots, device=device)
        self._gathered: dict[str, tuple[torch.Tensor, ...]] = {}  # bmm path: per module
        # (x, x in sorted order) of the last layer input; holding x keeps the identity check sound
        self._sorted_input: tuple[torch.Tensor, torch.Tensor] | None = None

    def apply(self, module: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Add the requests' LoRA terms of ``module`` to the base output ``y = base(x)``, in place."""
        if x.shape[0] != self.n_requests:
            raise ValueError(f"adapter_ids: {self.n_requests} ids for a batch of {x.shape[0]} requests")
        self.applied += 1
        if not self.segments or not any(module in self.weights[s] for _, _, s in self.segments):
            return y
        tokens = x[0].numel() // x.shape[-1]  # tokens per request
        path = self.path if self.path != "auto" else ("bmm" if tokens <= BMM_MAX_TOKENS else "segment")
        return self._bmm(module, x, y) if path == "bmm" else self._segment(module, x, y)

    def _segment(self, module: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d_in, d_out = x.shape[-1], y.shape[-1]
        if self.grouped:  # contiguous views of x and y
            for s, e, slot in self.segments:
                w = self.weights[slot].get(module)
                if w is not None:
                    y[s:e].view(-1, d_out).addmm_(x[s:e].reshape(-1, d_in) @ w.A.T, w.B.T, alpha=w.scale)
            return y
        # q/k/v projections share their input: gather it into sorted order once per layer
        if self._sorted_input is None or self._sorted_input[0] is not x:
            self._sorted_input = (x, x.index_select(0, self.order))
        xs = self._sorted_input[1]
        delta = torch.zeros((xs.shape[0], *y.shape[1:]), dtype=y.dtype, device=y.device)
        for s, e, slot in self.segments:
            w = self.weights[slot].get(module)
            if w is not None:
                delta[s:e].view(-1, d_out).addmm_(xs[s:e].reshape(-1, d_in) @ w.A.T, w.B.T, alpha=w.scale)
        return y.index_add_(0, self.order, delta)

    def _bmm(self, module: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if module not in self._gathered:
            self._gathered[module] = self._gather(module, x.shape[-1], y.shape[-1], x.dtype)
        A, Bt, scale = self._gathered[module]  # [n, r, in], [n, r, out], [n, 1, 1]
        n = x.shape[0]
        xa = torch.bmm(x.reshape(n, -1, x.shape[-1]), A.transpose(1, 2)).mul_(scale)  # [n, T, r]
        y.view(n, -1, y.shape[-1]).baddbmm_(xa, Bt)
        return y

    def _gather(self, module: str, d_in: int, d_out: int, dtype) -> tuple[torch.Tensor, ...]:
        """Per-request A [n, r, in], B^T [n, r, out] (one stack each; zero-padded to the batch's
        largest rank when ranks differ) and scale [n, 1, 1]; zeros for requests without an
        adapter on this module."""
        found = [w.get(module) for w in self.weights]
        ranks = {w.rank for w in found if w is not None}
        r, some = max(ranks), next(w for w in found if w is not None)
        none_A, none_Bt = some.A.new_zeros(r, d_in), some.A.new_zeros(r, d_out)
        per_request = [found[s] if s >= 0 else None for s in self.slots.tolist()]
        # one rank: a plain stack; mixed ranks: zero-padded to the largest
        join = torch.stack if len(ranks) == 1 else partial(torch.nn.utils.rnn.pad_sequence, batch_first=True)
        A = join([none_A if w is None else w.A for w in per_request])
        Bt = join([none_Bt if w is None else w.B.T for w in per_request])
        scale = torch.tensor([0.0 if w is None else w.scale for w in per_request], dtype=dtype, device=A.device)
        return A, Bt, scale.view(-1, 1, 1)


def _runs(slots: list[int]) -> list[tuple[int, int, int]] | list:
    """(start, end, slot) runs of equal slots in batch order, base-only requests skipped; if some
    adapter occurs in two runs the batch is not grouped and the list is longer than the plan's."""
    runs: list[tuple[int, int, int]] = []
    for i, s in enumerate(slots):
        if s < 0:
            continue
        if runs and runs[-1][2] == s and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1, s)
        else:
            runs.append((i, i + 1, s))
    return runs


# ----------------------------------------------------------------------------- the model
class MultiLoraLinear(nn.Module):
    """An ``nn.Linear`` plus the LoRA terms of the current batch's adapters (none outside a batch)."""

    def __init__(self, base: nn.Linear, name: str, hub: MultiLora):
        super().__init__()
        self.base, self.name = base, name
        self._hub = [hub]  # in a list: not registered as a submodule (no cycle in the module tree)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        plan = self._hub[0].plan
        return y if plan is None else plan.apply(self.name, x, y)


class MultiLora:
    """A base model whose adapted linears serve a batch of requests with one adapter each."""

    def __init__(self, model: nn.Module, store: AdapterStore, path: str = "auto"):
        if path not in PATHS:
            raise ValueError(f"path: must be one of {PATHS}, got {path!r}")
        self.model, self.store, self.path = model, store, path
        self.plan: Plan | None = None
        self.plans_built = 0
        self.layers: dict[str, MultiLoraLinear] = {}
        modules = dict(model.named_modules())
        for name in sorted(store.modules()):
            base = modules.get(name)
            if isinstance(base, MultiLoraLinear):
                raise ValueError(f"model: module {name!r} is already wrapped (attach once per model)")
            if not isinstance(base, nn.Linear):
                raise ValueError(f"store: adapters target {name!r}, which is not an nn.Linear of the model")
            parent, _, child = name.rpartition(".")
            layer = MultiLoraLinear(base, name, self)
            setattr(model.get_submodule(parent) if parent else model, child, layer)
            self.layers[name] = layer
        for adapter in store.names:
            self._check_shapes(adapter)

    def _check_shapes(self, adapter: str) -> None:
        for module, w in self.store[adapter].items():
            if module not in self.layers:
                raise ValueError(f"adapter {adapter!r}: targets {module!r}, which was added to the store after attach")
            base = self.layers[module].base
            if w.A.shape[1] != base.in_features or w.B.shape[0] != base.out_features:
                raise ValueError(
                    f"adapter {adapter!r} module {module!r}: A {tuple(w.A.shape)} / B {tuple(w.B.shape)} do not fit "
                    f"Linear({base.in_features}, {base.out_features})"
                )

    @contextmanager
    def batch(self, adapter_ids: Sequence[str | None] | Plan, path: str | None = None):
        """Within the body, the model serves request i (batch row i) with adapter ``adapter_ids[i]``.

        Passing the :class:`Plan` a previous ``batch`` yielded reuses it (a serving loop whose
        batch did not change keeps its sorted segments and gathered weights)."""
        if self.plan is not None:
            raise RuntimeError("batch: already inside a batch context of this model")
        if isinstance(adapter_ids, Plan):
            self.plan = adapter_ids
        else:
            param = next(self.model.parameters())
            self.plan = Plan(adapter_ids, self.store, param.device, self.path if path is None else path, param.dtype)
            self.plans_built += 1
        try:
            yield self.plan
        finally:
            self.plan = None

    def __call__(self, input_ids: torch.Tensor, adapter_ids: Sequence[str | None], **kwargs):
        """``model(input_ids, **kwargs)`` with request i served by adapter ``adapter_ids[i]``."""
        with self.batch(adapter_ids):
            return self.model(input_ids, **kwargs)


def attach(model: nn.Module, store: AdapterStore, path: str = "auto") -> MultiLora:
    """Wrap every linear of ``model`` that an adapter of ``store`` targets (in place); see :class:`MultiLora`."""
    return MultiLora(model, store, path)
