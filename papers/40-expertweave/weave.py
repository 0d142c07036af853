"""ExpertWeave's serving path: one MoE model, many ESFT adapters in one batch.

Per MoE layer the expert weights live in one tensor of shape [M + N * E_max, ...]: the M base
experts, then E_max slots for each of N adapters (adapter i from Delta_i = M + i * E_max, its
e_i^(l) fine-tuned experts first, the rest of its slots never written). With ``storage=
"virtual"`` that tensor is a :class:`paper40.vmem.VirtualTensor` (an anonymous mmap: only
written slots take memory); ``"dense"`` allocates it in full (the padding baseline, and the
only option on CUDA here: CUDA virtual memory is out of scope).

The ESFT expert map Pi^(l) [N + 1, M] holds, for row a + 1 (adapter a; row 0 = the base model,
the paper's adapter id -1) and expert j, the slot of adapter a's copy of j if it tuned j, else
j. Batched rerouting is one gather on a flat index precomputed once per batch:
TopK'(x) = Pi_flat[(A(x) + 1) * M + TopK(x)]. The router is the base model's, untouched (ESFT
does not tune it), so the top-k indices and weights are the merged model's.

The expert loop is transformers' eager one (``Qwen2MoeExperts``: per expert, gather its tokens,
SwiGLU, scale by the routing weight, ``index_add_``), visiting slots in the order of the base
expert they replace, so every token sums its experts' outputs in the merged model's order.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from paper40.esft import Adapter, moe_blocks
from paper40.vmem import VirtualTensor


class WeavedMoe(nn.Module):
    """A Qwen2-MoE sparse block serving the base model and N adapters' experts in one batch.

    ``adapter_experts[i]``: {expert j: (gate_up, down)} of adapter i in this layer.
    ``token_offsets`` ((adapter id + 1) * M per token, set by :class:`WeavedModel` for each batch)
    switches rerouting on; None serves the base model without the gather.
    """

    def __init__(self, block, adapter_experts: Sequence[dict[int, tuple[torch.Tensor, torch.Tensor]]], e_max: int,
                 n_adapter_slots: int | None = None, storage: str = "virtual"):
        super().__init__()
        experts = block.experts
        m = experts.num_experts
        n = len(adapter_experts) if n_adapter_slots is None else n_adapter_slots
        if len(adapter_experts) > n:
            raise ValueError(f"n_adapter_slots: {len(adapter_experts)} adapters do not fit {n} slots")
        self.gate, self.shared_expert, self.shared_expert_gate = block.gate, block.shared_expert, block.shared_expert_gate
        self.act_fn = experts.act_fn
        self.n_base, self.e_max, self.n_adapter_slots = m, e_max, n
        n_slots = m + n * e_max
        device, dtype = experts.gate_up_proj.device, experts.gate_up_proj.dtype
        if storage == "virtual":
            if device.type != "cpu":
                raise ValueError(f"storage: 'virtual' (Linux mmap) is host memory only, the model is on {device}")
            self._gu = VirtualTensor(n_slots, experts.gate_up_proj.shape[1:], dtype)
            self._dn = VirtualTensor(n_slots, experts.down_proj.shape[1:], dtype)
            self.gate_up, self.down = self._gu.tensor, self._dn.tensor
        elif storage == "dense":
            self._gu = self._dn = None
            self.gate_up = torch.zeros(n_slots, *experts.gate_up_proj.shape[1:], device=device, dtype=dtype)
            self.down = torch.zeros(n_slots, *experts.down_proj.shape[1:], device=device, dtype=dtype)
        else:
            raise ValueError(f"storage: 'virtual' or 'dense', got {storage!r}")
        pi = torch.arange(m).repeat(n + 1, 1)
        self.slot_base = list(range(m)) + [-1] * (n * e_max)
        with torch.no_grad():
            self._put(range(m), experts.gate_up_proj.detach(), experts.down_proj.detach())
            for i, tuned in enumerate(adapter_experts):
                if len(tuned) > e_max:
                    raise ValueError(f"e_max: adapter {i} tunes {len(tuned)} experts in a layer, more than e_max={e_max}")
                for k, j in enumerate(sorted(tuned)):
                    slot = m + i * e_max + k
                    gate_up, down = tuned[j]
                    self._put([slot], gate_up[None], down[None])
                    pi[i + 1, j] = slot
                    self.slot_base[slot] = j
        self.register_buffer("pi_flat", pi.reshape(-1).to(device), persistent=False)
        self.token_offsets: torch.Tensor | None = None

    def _put(self, slots, gate_up, down) -> None:
        for k, slot in enumerate(slots):
            if self._gu is not None:
                self._gu.write(slot, gate_up[k])
                self._dn.write(slot, down[k])
            else:
                self.gate_up[slot].copy_(gate_up[k])
                self.down[slot].copy_(down[k])

    def memory(self) -> dict[str, int]:
        """Reserved, written and page-rounded bytes of this layer's two expert tensors."""
        if self._gu is None:
            full = (self.gate_up.numel() + self.down.numel()) * self.gate_up.element_size()
            return {"reserved_bytes": full, "used_bytes": full, "page_rounded_bytes": full}
        return {key: getattr(self._gu, key) + getattr(self._dn, key)
                for key in ("reserved_bytes", "used_bytes", "page_rounded_bytes")}

    def reroute(self, top_k_index: torch.Tensor) -> torch.Tensor:
        """Batched rerouting with the per-batch offsets: one add and one gather."""
        return self.pi_flat[self.token_offsets[:, None] + top_k_index]

    def reroute_unfused(self, top_k_index: torch.Tensor, adapter_ids: torch.Tensor, seq_len: int) -> torch.Tensor:
        """The same map, recomputed from per-request adapter ids in every layer (broadcast, shift,
        scale, add, gather): the paper's "SingleOp" PyTorch version."""
        rows = (adapter_ids.repeat_interleave(seq_len) + 1)[:, None].expand_as(top_k_index)
        return torch.gather(self.pi_flat, 0, (rows * self.n_base + top_k_index).reshape(-1)).view_as(top_k_index)

    def experts(self, x: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        with torch.no_grad():
            hit = torch.unique(top_k_index).tolist()
        hit.sort(key=lambda s: (self.slot_base[s], s))  # the merged model's order of summation
        index_t = top_k_index.T
        for slot in hit:
            top_k_pos, token_idx = torch.where(index_t == slot)
            gate, up = F.linear(x[token_idx], self.gate_up[slot]).chunk(2, dim=-1)
            h = F.linear(self.act_fn(gate) * up, self.down[slot])
            h = h * top_k_weights[token_idx, top_k_pos, None]
            out.index_add_(0, token_idx, h.to(out.dtype))
        return out

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = hidden_states.shape
        x = hidden_states.view(-1, hidden)
        shared = self.shared_expert(x)
        _, weights, top_k = self.gate(x)
        if self.token_offsets is not None:
            top_k = self.reroute(top_k)
        out = self.experts(x, top_k, weights)
        shared = F.sigmoid(self.shared_expert_gate(x)) * shared
        return (out + shared).reshape(batch, seq, hidden)


class WeavedModel:
    """A copy of ``base`` whose MoE layers are :class:`WeavedMoe` holding every adapter's experts.

    ``logits(input_ids, adapter_ids)``: rows of one batch, each with its adapter (index into
    ``adapters``, or -1 for the base model).
    """

    def __init__(self, base, adapters: Sequence[Adapter], e_max: int | None = None,
                 n_adapter_slots: int | None = None, storage: str = "virtual"):
        need = max((c for a in adapters for c in a.counts), default=0)
        self.e_max = need if e_max is None else e_max
        if self.e_max < need:
            raise ValueError(f"e_max: an adapter tunes {need} experts in one layer, e_max={self.e_max} is too small")
        self.adapters = list(adapters)
        self.model = copy.deepcopy(base).eval()
        self.blocks: list[WeavedMoe] = []
        for row, (idx, block) in enumerate(moe_blocks(self.model)):
            per_adapter = [{j: a.experts[(row, j)] for j in a.selection[row]} for a in adapters]
            weaved = WeavedMoe(block, per_adapter, self.e_max, n_adapter_slots, storage)
            self.model.model.layers[idx].mlp = weaved
            self.blocks.append(weaved)
        self.n_base = self.blocks[0].n_base

    def set_batch(self, adapter_ids: torch.Tensor | None, seq_len: int) -> None:
        """Precompute the flat-index offsets of a batch (None: the base model, no rerouting)."""
        offsets = None
        if adapter_ids is not None:
            if adapter_ids.min() < -1 or adapter_ids.max() >= len(self.adapters):
                raise ValueError(f"adapter_ids: must be in [-1, {len(self.adapters)}), got {adapter_ids.tolist()}")
            offsets = ((adapter_ids + 1) * self.n_base).repeat_interleave(seq_len)
        for block in self.blocks:
            block.token_offsets = offsets

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, adapter_ids: torch.Tensor | None) -> torch.Tensor:
        """Logits of a batch whose row r is served by adapter ``adapter_ids[r]`` (-1: the base model;
        None: every row on the base model, no rerouting). The per-batch offsets are cleared after
        the forward, so a later direct call of a block does not reroute with stale offsets."""
        self.set_batch(None if adapter_ids is None else adapter_ids.to(input_ids.device), input_ids.shape[1])
        try:
            return self.model(input_ids=input_ids).logits
        finally:
            self.set_batch(None, input_ids.shape[1])

    def memory(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for block in self.blocks:
            for key, value in block.memory().items():
                totals[key] = totals.get(key, 0) + value
        return totals


@torch.no_grad()
def max_logit_diff(weaved: WeavedModel, references: Sequence, input_ids: torch.Tensor,
                   adapter_ids: torch.Tensor, own_rows: bool = False) -> list[float]:
    """Per reference, the max |logit difference| between the weaved model on the mixed batch and
    the reference model (adapter i's merged model; one more reference than adapters: the base
    model, for the rows with id -1) on the rows of its adapter.

    ``own_rows=False``: the reference runs the same mixed batch (the same shapes reach every
    kernel, so the difference is the weaving alone); True: it runs only its adapter's rows (a
    merge-and-serve deployment's batch), which adds float32 batch-composition noise.
    """
    mixed = weaved.logits(input_ids, adapter_ids)
    out = []
    for i, ref in enumerate(references):
        aid = i if i < len(weaved.adapters) else -1
        rows = (adapter_ids == aid).nonzero().flatten()
        if rows.numel() == 0:
            raise ValueError(f"adapter_ids: no row of adapter {aid} in the mixed batch")
        want = ref(input_ids=input_ids[rows]).logits if own_rows else ref(input_ids=input_ids).logits[rows]
        out.append(float((mixed[rows] - want).abs().max()))
    return out


# ----------------------------------------------------------------------------- timing one layer
def synthetic_adapters(block, n_adapters: int, n_tuned: int, seed: int, noise: float = 0.02
                       ) -> list[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """``n_adapters`` adapters of one MoE block, each tuning ``n_tuned`` random experts (base
    weights plus Gaussian noise): the cost of serving does not depend on the values."""
    g = torch.Generator().manual_seed(seed)
    e = block.experts
    out = []
    for _ in range(n_adapters):
        chosen = sorted(torch.randperm(e.num_experts, generator=g)[:n_tuned].tolist())
        tuned = {}
        for j in chosen:
            gu, dn = e.gate_up_proj.detach()[j].cpu(), e.down_proj.detach()[j].cpu()
            tuned[j] = (gu + noise * torch.randn(gu.shape, generator=g).to(gu.dtype),
                        dn + noise * torch.randn(dn.shape, generator=g).to(dn.dtype))
        out.append({j: (gu.to(e.gate_up_proj.device), dn.to(e.gate_up_proj.device)) for j, (gu, dn) in tuned.items()})
    return out


@torch.no_grad()
def layer_timings(block, weaved: WeavedMoe, hidden: torch.Tensor, adapter_ids: torch.Tensor, *, repeats: int,
                  warmup: int, num_threads: int, device: str) -> dict[str, float]:
    """Median seconds of: the base block (transformers' own), the weaved block without rerouting
    (the same expert loop, base model only), with every token on the base model (the rerouting
    gather runs and maps to itself) and with the mixed adapters, the rerouting gather alone, and
    its unfused per-layer recomputation from adapter ids. ``hidden``: [requests, seq, H]."""
    from shared import timing

    seq = hidden.shape[1]
    base_offsets = torch.zeros(hidden.shape[0] * seq, dtype=torch.long, device=hidden.device)
    mixed_offsets = ((adapter_ids + 1) * weaved.n_base).repeat_interleave(seq)
    _, _, top_k = weaved.gate(hidden.view(-1, hidden.shape[-1]))

    def run_weaved(offsets):
        weaved.token_offsets = offsets
        return weaved(hidden)

    def reroute():
        weaved.token_offsets = mixed_offsets
        return weaved.reroute(top_k)

    fns = {
        "layer_base": lambda: block(hidden),
        "layer_weaved_no_reroute": lambda: run_weaved(None),
        "layer_weaved_base_rows": lambda: run_weaved(base_offsets),
        "layer_weaved_mixed": lambda: run_weaved(mixed_offsets),
        "reroute": reroute,
        "reroute_unfused": lambda: weaved.reroute_unfused(top_k, adapter_ids, seq),
    }
    out = {}
    layers, gathers = [k for k in fns if k.startswith("layer")], [k for k in fns if k.startswith("reroute")]
    for names, number in ((layers, 1), (gathers, 50)):  # the gathers are tiny: 50 calls per sample
        got = timing.benchmark({k: fns[k] for k in names}, repeats=repeats, warmup=warmup,
                               number=number, num_threads=num_threads, device=device)
        out.update({k: v.median_s for k, v in got.items()})
    weaved.token_offsets = None
    return out
