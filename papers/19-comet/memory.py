"""KV-cache and weight bytes at W4 / KV4 against FP16, for our models and the paper's LLaMA
configurations, and which hardware has the INT4 tensor cores COMET's kernel needs.

    memory.kv_bytes_per_token(layers=32, kv_heads=8, head_dim=128, bits=4, group=128)  # scales included
    memory.llama_table(group=128, kv_group=128)       # one row per LLaMA config of the paper
    memory.HARDWARE                                   # INT4 tensor-core support, with sources

Quantised bytes count every stored element code plus, per group, an FP16 scale (and for the
asymmetric KV quantiser an INT zero point of the element width), from
``shared.numformats.bits_per_element``; FP16 is 2 bytes per value, no scales.
"""

from __future__ import annotations

import pandas as pd

from shared import numformats as nf

from paper19.fmpq import FP16, kv_scheme

# The LLaMA models COMET serves (paper: LLaMA family up to LLaMA-3-70B); public configs.
LLAMA = {
    "LLaMA-2-7B": dict(layers=32, d_model=4096, heads=32, kv_heads=32, head_dim=128, d_ff=11008),
    "LLaMA-2-13B": dict(layers=40, d_model=5120, heads=40, kv_heads=40, head_dim=128, d_ff=13824),
    "LLaMA-2-70B": dict(layers=80, d_model=8192, heads=64, kv_heads=8, head_dim=128, d_ff=28672),
    "LLaMA-3-8B": dict(layers=32, d_model=4096, heads=32, kv_heads=8, head_dim=128, d_ff=14336),
    "LLaMA-3-70B": dict(layers=80, d_model=8192, heads=64, kv_heads=8, head_dim=128, d_ff=28672),
}

# Which hardware runs an INT4 x INT4 GEMM on matrix units (checked with the search tool; see README).
HARDWARE = [
    {"hardware": "NVIDIA Turing (sm_75, T4 / RTX 20)", "int4_matrix": True,
     "source": "LLVM D60279: sub-integer MMA variants on sm_75; nunchaku: 4-bit tensor cores on Turing/Ampere/Ada"},
    {"hardware": "NVIDIA Ampere (sm_80/86, A100 / A10 / RTX 30)", "int4_matrix": True,
     "source": "A100 datasheet via glennklockwood.com: INT4 1248 TOPS dense (INT8 624)"},
    {"hardware": "NVIDIA Ada (sm_89, L40 / L40S / RTX 40)", "int4_matrix": True,
     "source": "L40 datasheet table (mullet.se): peak INT4 tensor 724 TOPS; nunchaku lists Ada"},
    {"hardware": "NVIDIA Hopper (sm_90, H100 / H200)", "int4_matrix": False,
     "source": "nunchaku#381 'Hopper does not have 4-bit tensorcores'; TileRT#48 'Hopper don't support 4-bit MMA'"},
    {"hardware": "NVIDIA Blackwell (sm_100/120, B200 / RTX 50)", "int4_matrix": False,
     "source": "FP4 (NVFP4/MXFP4) block-scaled MMA instead; INT4 MMA not exposed by NVIDIA's stack (tilelang#2364)"},
    {"hardware": "x86 CPUs (AVX512-VNNI / AVX-VNNI / AMX)", "int4_matrix": False,
     "source": "VNNI vpdpbusd and AMX tdpbusd are int8 (AMX also bf16/fp16); no int4 dot product"},
]


def _bits(bits: int, group: int, asym: bool) -> float:
    if asym:
        return nf.bits_per_element(kv_scheme(bits, group))
    return nf.bits_per_element(nf.per_group({4: nf.INT4, 8: nf.INT8}[bits], group, scale_format=FP16))


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, bits: int | None = None, group: int = 128) -> float:
    """Bytes one token adds to the K and V caches of every layer; ``bits`` None is FP16."""
    values = 2 * layers * kv_heads * head_dim
    if bits is None:
        return 2.0 * values
    return values * _bits(bits, min(group, head_dim), asym=True) / 8


def linear_params(layers: int, d_model: int, heads: int, kv_heads: int, head_dim: int, d_ff: int) -> int:
    """Parameters of the decoder's Linear layers (q, k, v, o, gate, up, down): what W4 quantises."""
    attn = d_model * heads * head_dim * 2 + d_model * kv_heads * head_dim * 2
    return layers * (attn + 3 * d_model * d_ff)


def llama_table(group: int, kv_group: int, context: int, batch: int) -> pd.DataFrame:
    """Per LLaMA config: KV bytes per token at FP16 and KV4, the saving, and (Linear weights +
    KV cache of ``batch`` x ``context`` tokens) at W4 + KV4 over FP16."""
    rows = []
    w4 = _bits(4, group, asym=False)
    for name, c in LLAMA.items():
        kv16 = kv_bytes_per_token(c["layers"], c["kv_heads"], c["head_dim"])
        kv4 = kv_bytes_per_token(c["layers"], c["kv_heads"], c["head_dim"], 4, kv_group)
        n = linear_params(**c)
        tokens = context * batch
        rows.append({"model": name, "kv_fp16_bytes_per_token": kv16, "kv4_bytes_per_token": kv4,
                     "kv4_ratio": kv4 / kv16, "kv_saved": 1 - kv4 / kv16,
                     "linear_params": n, "w4_bits_per_weight": w4,
                     "w4kv4_ratio": (n * w4 / 8 + tokens * kv4) / (2 * n + tokens * kv16)})
    return pd.DataFrame(rows)
