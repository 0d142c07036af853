"""Native Sparse Attention (Yuan et al. 2025, arXiv 2502.11089) as a drop-in Llama attention.

Each query attends over three views of the past and mixes them with learned gates (Eq. 5):

    o_t = g_cmp * Attn(q_t, K_cmp, V_cmp) + g_slc * Attn(q_t, K_slc, V_slc) + g_win * Attn(q_t, K_win, V_win)

- compressed (Eq. 7): keys/values cut into blocks of length l with stride d; a learned MLP
  phi with an intra-block position embedding maps each block to ONE key (value). A query at
  position t sees the blocks that end at or before t.
- selected (Eqs. 8-12): the compressed branch's attention probabilities p_cmp score the
  selection blocks of length l' (a compressed block adds its probability to each selection
  block in proportion to the stride-d units they share: Eq. 9's double sum), summed over the
  heads of a GQA group so the group reads the same blocks (Eq. 10). The top-n blocks, always
  including the first block and the 2 most recent ones (Section 4.1: "1 initial + 2 local"),
  are attended at full resolution (causally).
- sliding window: the last w tokens (t - w < s <= t).
- gates: sigmoid of a linear map of the layer input, one per branch per query head.

As in the paper, each branch has its own keys and values ("independent keys and values for
three branches", Section 3.3.3), so the KV cache holds three K/V sets per token (see
``shared.zoo.kv_cache_bytes_per_token``). RoPE is applied to the queries and keys of the
selected and window branches; the compressed branch uses the un-rotated query and keys (its
keys carry position through phi's intra-block embedding and the block-causal mask), a choice
the paper leaves open.

This is plain PyTorch with dense boolean masks: correctness and readability over speed. It
computes every query-key score and masks the unselected ones, so its cost is quadratic like
full attention. It is NOT the paper's Triton kernel (group-centric loading of selected
blocks): latency and memory measured with it are not the paper's and say nothing about NSA's
speed-ups. The attention mask of the model (padding) is ignored: inputs must be unpadded
(or right-padded with the padding positions ignored).

Decoding: K/V of all three branches go into transformers' cache (concatenated along the head
dimension, so a standard DynamicCache holds them); compressed keys, importance scores and
selections are recomputed from the cached K/V at every step, which gives the same outputs
as the full forward (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INITIAL_BLOCKS = 1  # always-selected blocks at the start of the sequence (paper: 1)
LOCAL_BLOCKS = 2  # always-selected most recent blocks, including the query's own (paper: 2)


def _compressor_params(dh: int, block: int) -> int:
    """phi: position embedding (l x dh), Linear(l*dh -> dh) + bias, GELU, Linear(dh -> dh) + bias."""
    return block * dh + (block * dh * dh + dh) + (dh * dh + dh)


def extra_params(d: int, h: int, kv: int, dh: int, block: int) -> int:
    """Parameters of an NSA layer beyond a plain attention's q, k, v, o projections."""
    branch_kv = 2 * 2 * d * kv * dh  # K and V of the two extra branches
    return branch_kv + 2 * _compressor_params(dh, block) + (d * 3 * h + 3 * h)  # phi_K, phi_V, gate


def extra_macs_per_token(d: int, h: int, kv: int, dh: int, block: int, stride: int) -> int:
    """Multiply-adds per token beyond the projections and attention: gate, phi per new block."""
    phi = block * dh * dh + dh * dh  # one compressed key (or value) of one KV head
    return d * 3 * h + (2 * kv * phi) // stride


class Compressor(nn.Module):
    """phi of Eq. 7: a block of l keys (+ intra-block position embedding) -> one key."""

    def __init__(self, block: int, head_dim: int, std: float):
        super().__init__()
        self.block = block
        self.pos = nn.Parameter(torch.randn(block, head_dim) * std)
        self.fc1 = nn.Linear(block * head_dim, head_dim)
        self.fc2 = nn.Linear(head_dim, head_dim)
        for fc in (self.fc1, self.fc2):
            nn.init.normal_(fc.weight, std=std)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        """x [B, Hkv, T, dh] -> [B, Hkv, n_blocks, dh], n_blocks = (T - l) // stride + 1 (0 if T < l)."""
        b, hk, t, dh = x.shape
        if t < self.block:
            return x.new_zeros(b, hk, 0, dh)
        blocks = x.unfold(2, self.block, stride).transpose(-1, -2)  # [B, Hkv, n, l, dh]
        return self.fc2(F.gelu(self.fc1((blocks + self.pos).flatten(-2))))


class NativeSparseAttention(nn.Module):
    """Drop-in for ``LlamaAttention`` (transformers 5.x): same constructor and forward signature.

    Reads the NSA sizes from the config: ``nsa_block`` (l), ``nsa_stride`` (d),
    ``nsa_select_block`` (l'), ``nsa_selected`` (n), ``nsa_window`` (w). Set
    ``force_gates = (g_cmp, g_slc, g_win)`` to replace the learned gates (ablations, tests).
    """

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.block = config.nsa_block
        self.stride = config.nsa_stride
        self.select_block = config.nsa_select_block
        self.selected = config.nsa_selected
        self.window = config.nsa_window
        self.force_gates: tuple[float, float, float] | None = None

        d, h, kv, dh, std = config.hidden_size, self.n_heads, self.n_kv, self.head_dim, config.initializer_range
        self.q_proj = nn.Linear(d, h * dh, bias=False)
        # K and V of the three branches, rows laid out [cmp | slc | win], kv * dh each
        self.k_proj = nn.Linear(d, 3 * kv * dh, bias=False)
        self.v_proj = nn.Linear(d, 3 * kv * dh, bias=False)
        self.o_proj = nn.Linear(h * dh, d, bias=False)
        self.gate_proj = nn.Linear(d, 3 * h)  # -> sigmoid: one gate per branch per head
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.gate_proj):
            nn.init.normal_(lin.weight, std=std)
        nn.init.zeros_(self.gate_proj.bias)  # gates start near 0.5
        self.compress_k = Compressor(self.block, dh, std)
        self.compress_v = Compressor(self.block, dh, std)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        b, t, _ = hidden_states.shape
        h, kv, dh = self.n_heads, self.n_kv, self.head_dim
        q = self.q_proj(hidden_states).view(b, t, h, dh).transpose(1, 2)  # [B, H, T, dh]
        k = self.k_proj(hidden_states).view(b, t, 3 * kv, dh).transpose(1, 2)  # [B, 3Hkv, T, dh]
        v = self.v_proj(hidden_states).view(b, t, 3 * kv, dh).transpose(1, 2)
        k_cmp, k_slc, k_win = k.split(kv, dim=1)
        v_cmp, v_slc, v_win = v.split(kv, dim=1)

        cos, sin = position_embeddings
        q_rot, k_slc = apply_rotary_pos_emb(q, k_slc, cos, sin)
        _, k_win = apply_rotary_pos_emb(q, k_win, cos, sin)

        past = 0
        if cache is not None:  # one cache entry: the three branches side by side on the last dim
            past = cache.get_seq_length(self.layer_idx)
            keys, values = cache.update(
                torch.cat([k_cmp, k_slc, k_win], -1), torch.cat([v_cmp, v_slc, v_win], -1), self.layer_idx, kwargs=kwargs
            )
            k_cmp, k_slc, k_win = keys.split(dh, dim=-1)
            v_cmp, v_slc, v_win = values.split(dh, dim=-1)

        q_pos = torch.arange(past, past + t, device=q.device)  # absolute positions of the queries
        k_pos = torch.arange(k_slc.shape[2], device=q.device)

        o_cmp, p_cmp = self._compressed(q, k_cmp, v_cmp, q_pos)
        o_slc = self._selected(q_rot, k_slc, v_slc, q_pos, k_pos, p_cmp)
        in_window = (k_pos <= q_pos[:, None]) & (k_pos > q_pos[:, None] - self.window)
        o_win = _attend(q_rot, k_win, v_win, in_window, self.scaling)[0]

        if self.force_gates is not None:
            g = torch.tensor(self.force_gates, dtype=q.dtype, device=q.device).view(1, 1, 1, 3)
        else:
            g = torch.sigmoid(self.gate_proj(hidden_states)).view(b, t, h, 3).transpose(1, 2)  # [B, H, T, 3]
        out = g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_win
        out = out.transpose(1, 2).reshape(b, t, h * dh)
        return self.o_proj(out), None

    def _compressed(self, q, k_raw, v_raw, q_pos):
        """Attention over one key per block (Eq. 7); also returns its probabilities p_cmp (Eq. 8)."""
        k_c = self.compress_k(k_raw, self.stride)  # [B, Hkv, Nc, dh]
        v_c = self.compress_v(v_raw, self.stride)
        block_end = torch.arange(k_c.shape[2], device=q.device) * self.stride + self.block - 1
        return _attend(q, k_c, v_c, block_end <= q_pos[:, None], self.scaling)

    def _selected(self, q, k, v, q_pos, k_pos, p_cmp):
        """Attention over the tokens of the top-n selection blocks of each GQA group (Eqs. 9-12)."""
        h = q.shape[1]
        tk, ls = k.shape[2], self.select_block
        n_sel = -(-tk // ls)
        importance = block_importance(p_cmp, self.n_kv, n_sel, self.block, self.stride, ls)  # Eqs. 9, 10
        chosen = select_blocks(importance, q_pos, ls, self.selected)  # Eq. 11
        token_ok = chosen.repeat_interleave(ls, dim=-1)[..., :tk] & (k_pos <= q_pos[:, None])  # Eq. 12, causal
        token_ok = token_ok.repeat_interleave(h // self.n_kv, dim=1)  # group -> its query heads
        return _attend(q, k, v, token_ok, self.scaling)[0]


def importance_map(n_cmp: int, n_sel: int, block: int, stride: int, select_block: int) -> torch.Tensor:
    """[n_cmp, n_sel] weights of Eq. 9: p_slc = p_cmp @ map.

    Compressed block i covers tokens [i*d, i*d + l), selection block j [j*l', (j+1)*l'); i
    adds its probability to j once per stride-d unit they share (Eq. 9's double sum over the
    l'/d units of j and the l/d compressed blocks that contain each unit). With l = l' = d
    the map is the identity (p_slc = p_cmp, as the paper notes).
    """
    start = torch.arange(n_cmp)[:, None] * stride
    sel_start = torch.arange(n_sel)[None, :] * select_block
    shared = torch.minimum(start + block, sel_start + select_block) - torch.maximum(start, sel_start)
    return shared.clamp(min=0).float() / stride


def block_importance(p_cmp: torch.Tensor, n_kv: int, n_sel: int, block: int, stride: int, select_block: int):
    """Importance of each selection block for each GQA group: [B, Hkv, Tq, n_sel] from the
    compressed attention probabilities p_cmp [B, H, Tq, n_cmp] (Eq. 9), summed over the query
    heads of the group (Eq. 10; heads h*g .. h*g+g-1 share KV head h, as transformers' repeat_kv)."""
    b, h, tq, n_cmp = p_cmp.shape
    p_slc = p_cmp @ importance_map(n_cmp, n_sel, block, stride, select_block).to(p_cmp)
    return p_slc.view(b, n_kv, h // n_kv, tq, n_sel).sum(2)


def select_blocks(importance: torch.Tensor, q_pos: torch.Tensor, select_block: int, n: int) -> torch.Tensor:
    """Boolean [..., Tq, n_sel]: the top-n blocks by importance among those at or before each
    query's own block, always including the first INITIAL_BLOCKS and the LOCAL_BLOCKS most
    recent ones (the query's own block and the one before it): Eq. 11 with the paper's fixed blocks."""
    n_sel = importance.shape[-1]
    current = (q_pos // select_block)[:, None]  # [Tq, 1]: the query's own block
    j = torch.arange(n_sel, device=importance.device)[None, :]
    valid = j <= current
    forced = valid & ((j < INITIAL_BLOCKS) | (j > current - LOCAL_BLOCKS))
    score = importance.masked_fill(forced, float("inf")).masked_fill(~valid, float("-inf"))
    top = score.topk(min(n, n_sel), dim=-1).indices
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, top, True) & valid


def _attend(q, k, v, allowed, scaling):
    """Softmax attention of q [B, H, Tq, dh] over k, v [B, Hkv, Tk, dh] where ``allowed`` (bool,
    broadcastable to [B, H, Tq, Tk]); a query with no allowed key gets a zero output.
    Returns (output [B, H, Tq, dh], probabilities [B, H, Tq, Tk])."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)  # finite: no NaN in backward
    probs = scores.softmax(-1) * allowed  # rows with nothing allowed become all zeros
    return probs @ v, probs
