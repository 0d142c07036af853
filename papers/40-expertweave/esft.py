"""Expert-Specialized Fine-Tuning (ESFT, Wang et al. 2024) on a transformers Qwen2-MoE model.

ESFT samples task data, scores every routed expert of every MoE layer by its relevance, keeps
per layer the most relevant experts whose cumulative score reaches a threshold p, and fine-tunes
only those; the router, the shared expert, attention, norms and embeddings stay frozen (the
ExpertWeave paper, Sec. 2.2: "the router is not updated, opening the possibility for shared
inference"). The relevance here is ESFT's *token selection ratio*: the share of a layer's
top-k slots that pick the expert, r_j = #{(token, slot) : TopK slot = j} / (T k), which sums to
1 over the experts of a layer.

An adapter is the fine-tuned experts only: ``Adapter.experts[(layer, j)] = (gate_up, down)``
(the rows of transformers' fused expert tensors). ``merged`` swaps them into a copy of the base:
the deployment the paper compares against.
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


def moe_blocks(model) -> list[tuple[int, torch.nn.Module]]:
    """(layer index, sparse MoE block) of every MoE layer of a Qwen2-MoE causal LM."""
    blocks = [(i, layer.mlp) for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "experts")]
    if not blocks:
        raise ValueError("model: no MoE layers (expected a Qwen2MoeForCausalLM built with ffn='moe')")
    return blocks


# ----------------------------------------------------------------------------- task data
def _package_pieces(corpus_dir: Path, packages: Sequence[str], split: str) -> list[np.ndarray]:
    """The tokens of each file of ``packages`` in ``split`` (corpus order), each with its <|endoftext|>."""
    tokens = np.load(corpus_dir / f"{split}.npy", mmap_mode="r")
    want, pieces, offset = set(packages), [], 0
    with (corpus_dir / "files.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != split:
                continue
            n = int(row["tokens"]) + 1  # the file's ids, then <|endoftext|> (shared.corpus.encode_files)
            if row["package"] in want:
                pieces.append(np.asarray(tokens[offset:offset + n]))
            offset += n
    if offset != len(tokens):
        raise ValueError(f"{corpus_dir}: files.csv counts {offset} {split} tokens, {split}.npy has {len(tokens)}")
    if not pieces:
        raise ValueError(f"packages {list(packages)}: no {split} files in {corpus_dir / 'files.csv'}")
    return pieces


def package_tokens(corpus_dir: str | Path, packages: Sequence[str], split: str = "train") -> np.ndarray:
    """The corpus artifact's tokens of the files of ``packages`` (stdlib package names, e.g.
    ``email``), in corpus order, each file followed by its <|endoftext|>: one sub-corpus per ESFT
    task."""
    return np.concatenate(_package_pieces(Path(corpus_dir), packages, split))


def package_split(corpus_dir: str | Path, packages: Sequence[str], held_every: int,
                  split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(tuning tokens, held-out tokens) of ``packages``: every ``held_every``-th file (the last of
    each group of ``held_every``) is held out whole, so the held-out loss is on files ESFT never
    saw (the corpus artifact splits by package, so a package has no val files of its own)."""
    if held_every < 2:
        raise ValueError(f"held_every: must be >= 2 (one file in held_every is held out), got {held_every}")
    pieces = _package_pieces(Path(corpus_dir), packages, split)
    held = [x for k, x in enumerate(pieces) if k % held_every == held_every - 1]
    if not held:
        raise ValueError(f"held_every: packages {list(packages)} have {len(pieces)} files, fewer than held_every={held_every}")
    return (np.concatenate([x for k, x in enumerate(pieces) if k % held_every != held_every - 1]),
            np.concatenate(held))


# ----------------------------------------------------------------------------- relevance and selection
@torch.no_grad()
def routing_counts(model, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    """[n_moe_layers, n_experts] counts of (token, top-k slot) pairs that pick each expert."""
    blocks = moe_blocks(model)
    n_experts = blocks[0][1].experts.num_experts
    counts = torch.zeros(len(blocks), n_experts, dtype=torch.long)
    hooks = []
    for row, (_, block) in enumerate(blocks):
        def hook(_module, _inputs, output, row=row):
            indices = output[2]  # Qwen2MoeTopKRouter: (router_logits, top-k weights, top-k indices)
            counts[row] += torch.bincount(indices.reshape(-1).cpu(), minlength=n_experts)
        hooks.append(block.gate.register_forward_hook(hook))
    try:
        model.eval()
        for x, _ in batches:
            model(input_ids=x)
    finally:
        for h in hooks:
            h.remove()
    return counts.numpy()


def token_selection_ratio(counts: np.ndarray) -> np.ndarray:
    """Rows of ``counts`` normalised to sum to 1 (ESFT's token selection ratio per layer)."""
    counts = np.asarray(counts, dtype=float)
    empty = np.flatnonzero(counts.sum(axis=1) == 0)
    if len(empty):
        raise ValueError(f"counts: MoE layer {int(empty[0])} routed no tokens (score on a non-empty batch)")
    return counts / counts.sum(axis=1, keepdims=True)


def select_experts(ratio: np.ndarray, p: float) -> list[list[int]]:
    """Per layer, the fewest most-relevant experts whose cumulative relevance reaches ``p``
    (ties: lower expert id first); returned sorted by expert id."""
    if not 0 < p <= 1:
        raise ValueError(f"p: the cumulative relevance threshold must be in (0, 1], got {p}")
    chosen = []
    for row in np.asarray(ratio, dtype=float):
        order = np.lexsort((np.arange(len(row)), -row))  # descending relevance, then id
        cum = np.cumsum(row[order])
        n = int(np.searchsorted(cum, p - 1e-12) + 1)
        chosen.append(sorted(int(j) for j in order[:min(n, len(row))]))
    return chosen


# ----------------------------------------------------------------------------- adapters
@dataclass
class Adapter:
    """An ESFT adapter: the selected experts per MoE layer and their fine-tuned weights."""

    name: str
    selection: list[list[int]]  # per MoE layer (in moe_blocks order), sorted expert ids
    experts: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def counts(self) -> list[int]:
        return [len(s) for s in self.selection]


def finetune(
    base,
    selection: list[list[int]],
    batches,
    cfg,
    *,
    name: str,
    device: str = "cpu",
    seed: int = 0,
    progress: Callable | None = None,
) -> tuple[Adapter, object, object]:
    """Fine-tune only the selected experts of a copy of ``base``; return (adapter, TrainResult,
    the tuned model).

    Everything but the routed experts' fused tensors is frozen (requires_grad False); in those,
    a gradient hook zeroes the rows of unselected experts. AdamW then leaves them exactly as they
    were (a zero gradient gives a zero moment and a zero step) provided there is no weight decay,
    which would shrink every row: ``cfg.weight_decay`` must be 0.
    """
    from shared import trainer

    if cfg.weight_decay != 0:
        raise ValueError(f"weight_decay: must be 0 for ESFT (decay would move frozen experts), got {cfg.weight_decay}")
    model = copy.deepcopy(base)
    for param in model.parameters():
        param.requires_grad_(False)
    blocks = moe_blocks(model)
    if len(selection) != len(blocks):
        raise ValueError(f"selection: {len(selection)} layers given, the model has {len(blocks)} MoE layers")
    handles = []
    for (_, block), chosen in zip(blocks, selection):
        mask = torch.zeros(block.experts.num_experts, 1, 1)
        mask[list(chosen)] = 1.0
        for param in (block.experts.gate_up_proj, block.experts.down_proj):
            param.requires_grad_(True)
            handles.append(param.register_hook(lambda g, mask=mask: g * mask.to(g.device, g.dtype)))
    try:
        result = trainer.train(model, batches, cfg, device=device, seed=seed, progress=progress, desc=f"esft {name}")
    finally:
        for h in handles:
            h.remove()
    model.eval()
    adapter = Adapter(name, [list(s) for s in selection])
    for row, ((_, block), chosen) in enumerate(zip(blocks, selection)):
        for j in chosen:
            adapter.experts[(row, j)] = (
                block.experts.gate_up_proj.detach()[j].clone().cpu(),
                block.experts.down_proj.detach()[j].clone().cpu(),
            )
    return adapter, result, model


def frozen_unchanged(base, tuned, selection: list[list[int]]) -> bool:
    """True when every parameter of ``tuned`` equals ``base`` bit for bit except the selected experts."""
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    chosen = {}
    for row, (idx, _) in enumerate(moe_blocks(base)):
        chosen[f"model.layers.{idx}.mlp.experts."] = selection[row]
    for key, value in base_state.items():
        other = tuned_state[key]
        prefix = next((p for p in chosen if key.startswith(p)), None)
        if prefix is None:
            if not torch.equal(value, other):
                return False
            continue
        keep = [j for j in range(value.shape[0]) if j not in set(chosen[prefix])]
        if not torch.equal(value[keep], other[keep]):
            return False
    return True


@torch.no_grad()
def merged(base, adapter: Adapter):
    """A copy of ``base`` with the adapter's experts swapped in (the merge-and-serve deployment)."""
    model = copy.deepcopy(base)
    blocks = moe_blocks(model)
    for (row, j), (gate_up, down) in adapter.experts.items():
        block = blocks[row][1]
        block.experts.gate_up_proj[j] = gate_up.to(block.experts.gate_up_proj.device)
        block.experts.down_proj[j] = down.to(block.experts.down_proj.device)
    return model.eval()


def expert_bytes(d_model: int, d_expert: int, bytes_per_value: int = 4) -> int:
    """Bytes of one routed expert of a Qwen2-MoE layer: gate and up [d_expert, d_model] and down
    [d_model, d_expert] (transformers' fused gate_up_proj row + down_proj row)."""
    return 3 * d_model * d_expert * bytes_per_value
