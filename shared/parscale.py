"""Parallel scaling (ParScale, Chen et al. 2025, arXiv 2505.10475) as a wrapper around a zoo LM.

One model, P streams. Each stream sees the same tokens through its own learnable input
transformation, all P streams run through the SAME weights as one batched forward of batch
P x B, and a small MLP mixes their final hidden states token by token before the base
model's LM head runs once:

    h_p = base.model(x; prefix_p)                       p = 1..P   (one forward of batch P*B)
    w   = (1 - eps) softmax(MLP([h_1; ...; h_P])) + eps / P          (dynamic weights, per token)
    logits = lm_head(sum_p w_p h_p)

The input transformation is the paper's: a learnable prefix of ``prefix_len`` key/value
vectors per layer and per stream (the paper uses 48), i.e. prefix tuning. We implement it as
the paper's code does, through the KV cache: before the tokens, transformers' own
``DynamicCache`` of the installed transformers 5.x Llama is filled with the P prefixes
(stream-major batch order, each prefix repeated over the B sequences), so every attention
layer attends to ``prefix_len`` extra keys/values of its stream. The prefix keys are learned
directly (RoPE is not applied to them) and the tokens keep positions 0, 1, ... (the cache's
offset only moves the causal mask), as in the reference implementation
(QwenLM/ParScale modeling_qwen2_parscale.py, ``ParscaleCache``). The same cache then serves
decoding: a cached forward continues from it, so batch-1 generation with P streams is plain
batch-P decoding (``metrics.prefill_decode_latency`` works on a ``ParScaleLM`` unchanged).

The aggregation MLP is the paper's: Linear(P*d, d), SiLU, Linear(d, P) over the concatenated
(final-norm) hidden states, softmax over P in float32, label smoothing eps (0.1 in the paper)
so no stream's weight collapses to 0. New parameters (prefixes, MLP) are initialised
N(0, 0.02) with zero biases from their own seed, so wrapping never touches the base model's
weights or the caller's RNG.

Supported bases: the zoo's Llama (mha/gqa/mqa dense) and Qwen2-MoE (same attention and
cache layout). MLA caches a latent, NSA its own branches: refused in one line.

``wrap(model, streams, prefix_len, ...)`` is what sweeps call: streams == 1 returns the model
itself (the P = 1 baseline has no prefix and no aggregation, as in the paper), and the
structure depends only on the arguments, so ``state_dict()`` of a wrapped model loads into
``wrap(zoo.build(spec), same arguments)``. ``extra_params`` counts what parallel scaling adds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SUPPORTED_MODEL_TYPES = ("llama", "qwen2_moe")
INIT_STD = 0.02  # the reference implementation's initializer_range for the prefixes and the MLP


def extra_params(d_model: int, n_layers: int, kv_heads: int, head_dim: int, streams: int, prefix_len: int) -> int:
    """Parameters parallel scaling adds to a base model (0 for streams == 1).

    Prefix keys and values: 2 x layers x P x kv_heads x prefix_len x head_dim; aggregation MLP:
    (P d) x d + d (first linear) + d x P + P (second linear).
    """
    if streams < 1 or prefix_len < 0:
        raise ValueError(f"streams/prefix_len: need streams >= 1 and prefix_len >= 0, got {streams}, {prefix_len}")
    if streams == 1:
        return 0
    prefix = 2 * n_layers * streams * kv_heads * prefix_len * head_dim
    mlp = streams * d_model * d_model + d_model + d_model * streams + streams
    return prefix + mlp


def extra_params_for(spec, streams: int, prefix_len: int) -> int:
    """:func:`extra_params` for a ``shared.zoo.ModelSpec``."""
    return extra_params(spec.d_model, spec.n_layers, spec.kv_heads, spec.head_dim, streams, prefix_len)


class ParScaleLM(nn.Module):
    """P parallel streams of ``base`` (a transformers causal LM from ``shared.zoo.build``).

    ``forward(input_ids, cache=None, use_cache=False, logits_to_keep=0)`` returns a
    ``CausalLMOutputWithPast`` with ``.logits`` [B, T, V] (or the last ``logits_to_keep``
    positions) and, with ``use_cache``, ``.cache``: a DynamicCache of batch P*B holding the
    prefixes and the tokens so far; pass it back to continue decoding.
    ``stream_weights(input_ids)`` gives the aggregation weights [B, T, P].
    """

    def __init__(self, base: nn.Module, streams: int, prefix_len: int, smoothing: float = 0.1, seed: int = 0):
        super().__init__()
        config = base.config
        if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES or hasattr(config, "nsa_block"):
            kind = "nsa" if hasattr(config, "nsa_block") else getattr(config, "model_type", type(base).__name__)
            raise ValueError(f"base: ParScale prefixes need Llama-style KV caches ({', '.join(SUPPORTED_MODEL_TYPES)}); got {kind}")
        if streams < 2:
            raise ValueError(f"streams: ParScaleLM needs >= 2 (use wrap() for 1, which returns the base model), got {streams}")
        if prefix_len < 1:
            raise ValueError(f"prefix_len: the streams differ only by their prefixes, need >= 1, got {prefix_len}")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"smoothing: must be in [0, 1], got {smoothing}")
        self.base = base
        self.config = config  # vocab_size etc., as a transformers model exposes it (metrics helpers read it)
        self.streams, self.prefix_len, self.smoothing = int(streams), int(prefix_len), float(smoothing)
        d, layers = config.hidden_size, config.num_hidden_layers
        head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
        kv_heads = config.num_key_value_heads
        shape = (layers, streams, kv_heads, prefix_len, head_dim)
        self.prefix_k = nn.Parameter(torch.empty(shape))
        self.prefix_v = nn.Parameter(torch.empty(shape))
        self.aggregate = nn.Sequential(nn.Linear(streams * d, d), nn.SiLU(), nn.Linear(d, streams))
        self._init_new_parameters(seed)
        device = next(base.parameters()).device
        self.to(device)

    def _init_new_parameters(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)  # own generator: the caller's RNG state is untouched
        with torch.no_grad():
            for p in (self.prefix_k, self.prefix_v, self.aggregate[0].weight, self.aggregate[2].weight):
                p.copy_(torch.randn(p.shape, generator=generator) * INIT_STD)
            self.aggregate[0].bias.zero_()
            self.aggregate[2].bias.zero_()

    # ------------------------------------------------------------------------- pieces
    def prefix_cache(self, batch_size: int):
        """A DynamicCache holding each stream's prefix, batch order stream-major (P x B)."""
        from transformers import DynamicCache

        P, B = self.streams, batch_size

        def per_layer(t: torch.Tensor) -> torch.Tensor:  # [P, kv, m, hd] -> [P*B, kv, m, hd]
            return t.unsqueeze(1).expand(P, B, *t.shape[1:]).reshape(P * B, *t.shape[1:])

        cache = DynamicCache(config=self.config)
        for layer in range(self.prefix_k.shape[0]):
            cache.update(per_layer(self.prefix_k[layer]), per_layer(self.prefix_v[layer]), layer)
        return cache

    def weights_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Aggregation weights [B, T, P] from the streams' hidden states [P, B, T, d]."""
        P, B, T, d = hidden.shape
        concat = hidden.permute(1, 2, 0, 3).reshape(B, T, P * d)
        w = torch.softmax(self.aggregate(concat).float(), dim=-1)
        return w * (1.0 - self.smoothing) + self.smoothing / P

    def stream_hidden(self, input_ids: torch.Tensor, cache=None) -> tuple[torch.Tensor, Any]:
        """Final-norm hidden states of the P streams [P, B, T, d] and the cache (one batched forward)."""
        B, T = input_ids.shape
        embeds = self.base.get_input_embeddings()(input_ids)  # the embedding runs once, then is shared
        embeds = embeds.unsqueeze(0).expand(self.streams, *embeds.shape).reshape(self.streams * B, T, -1)
        if cache is None:
            cache, past = self.prefix_cache(B), 0
        else:
            past = cache.get_seq_length() - self.prefix_len
        # Tokens keep positions 0, 1, ...: the prefix has no position (no RoPE); the cache's
        # length (prefix + past tokens) only offsets the causal mask, so every token sees the whole prefix.
        positions = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)
        out = self.base.model(inputs_embeds=embeds, cache=cache, position_ids=positions, use_cache=True)
        hidden = out.last_hidden_state
        return hidden.view(self.streams, B, T, hidden.shape[-1]), cache

    def stream_weights(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The aggregation weights [B, T, P] for ``input_ids`` (no cache)."""
        hidden, _ = self.stream_hidden(input_ids)
        return self.weights_from_hidden(hidden)

    # ------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        cache=None,
        use_cache: bool | None = False,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        unknown = {k: v for k, v in kwargs.items() if v is not None and k not in ("attention_mask", "return_dict")}
        if unknown:
            raise ValueError(f"ParScaleLM.forward: unsupported arguments {sorted(unknown)} (input_ids, cache, use_cache, logits_to_keep)")
        if kwargs.get("attention_mask") is not None and not bool(kwargs["attention_mask"].all()):
            raise ValueError("attention_mask: padding is not supported by ParScaleLM (all-ones masks only)")
        hidden, cache = self.stream_hidden(input_ids, cache)
        if logits_to_keep:
            hidden = hidden[:, :, -logits_to_keep:]
        w = self.weights_from_hidden(hidden)  # [B, T, P], float32
        mixed = torch.einsum("pbtd,btp->btd", hidden.float(), w).to(hidden.dtype)
        logits = self.base.lm_head(mixed)
        return CausalLMOutputWithPast(logits=logits, cache=cache if use_cache else None)


def wrap(model: nn.Module, streams: int, prefix_len: int, smoothing: float = 0.1, seed: int = 0) -> nn.Module:
    """``model`` itself for streams == 1, else ``ParScaleLM(model, streams, prefix_len, smoothing, seed)``."""
    if streams == 1:
        return model
    return ParScaleLM(model, streams=streams, prefix_len=prefix_len, smoothing=smoothing, seed=seed)


def kv_cache_bytes(cache) -> int:
    """Bytes held by a transformers cache's key and value tensors (prefixes included)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


__all__ = ["ParScaleLM", "wrap", "extra_params", "extra_params_for", "kv_cache_bytes", "SUPPORTED_MODEL_TYPES"]
