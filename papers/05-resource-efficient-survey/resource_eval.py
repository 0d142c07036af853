"""Paper 05 · the resource-efficiency survey's metrics, measured on three compressions of a real encoder.

Bai et al. (arXiv 2401.00625) sort resource efficiency into five resources (computation,
memory, energy, money, network communication; §2.2.1) and list the metrics to report for
each (§9.1). The survey has no experiment of its own, so this module turns its metric set
into a harness run (on `shared.metrics`) and applies it to the three model-compression
techniques of its §6.1 on the real pretrained all-MiniLM-L6-v2 (6 layers, d = 384, 22.6 M
parameters without its unused pooler), doing a real task: zero-shot code search on the Python standard library
(query: a function's docstring summary; candidates: the code of every function in the pool;
mean-pooled, L2-normalised sentence embeddings ranked by cosine; recall@1 and MRR).

    baseline      the pretrained encoder (fp32 on CPU, bf16 on a GPU)
    int8-dynamic  torch.ao dynamic int8 Linear layers (weights int8, activations quantized
                  per batch; CPU kernels only: fbgemm / oneDNN)
    int8-bnb      bitsandbytes LLM.int8 Linear8bitLt (int8 weights, fp16 outlier columns)
    pruned        global L1 (magnitude) unstructured pruning of the encoder's Linear weights
    student       a shallower copy (teacher layers `student_layers`) distilled on corpus text
                  to reproduce the teacher's sentence embeddings (MSE + cosine)

Every technique is measured by the same code: real storage bytes (`metrics.model_size_report`:
packed int8 and bitsandbytes scales included; CSR bytes for the pruned weights), peak and time-averaged memory while embedding the pool
(`metrics.MemorySampler`), interleaved latency of one fixed batch (`shared.timing`),
throughput, FLOPs (torch's FlopCounterMode against an analytic count), energy
(`metrics.Energy`: NVML, RAPL, or an estimate labelled as such), retrieval quality, fidelity to
the teacher, and the Pareto front over bytes, latency and recall.

The BERT [CLS] pooler is dropped from every model: mean pooling does not use it (it would add
a 384 x 384 Linear to every count). The run's `dtype` applies to the float models; the int8
models are built from the fp32 teacher.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from shared import metrics
from shared.progress import silent

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LINEAR_OPS = ("aten.mm", "aten.addmm")  # what a Linear dispatches to under FlopCounterMode
ATTENTION_OPS = ("aten.bmm",)  # eager attention: Q K^T and A V
FP32_BYTES = 4


# ---------------------------------------------------------------------------------------
# The survey's taxonomy of resources x metrics (§2.2.1, §9.1), and how this run measures each
# ---------------------------------------------------------------------------------------
# status: "measured", "estimate" or "not-applicable-here"; the energy rows' status follows the
# Energy meter's source on the device of the run (see `taxonomy_table`).
TAXONOMY: list[dict[str, str]] = [
    {
        "resource": "computation",
        "metric": "FLOPs",
        "survey_section": "§9.1.1",
        "survey_definition": "the number of arithmetic operations on floating-point numbers",
        "unit": "FLOP per sentence",
        "how_here": "torch FlopCounterMode over one forward (eager attention), checked against "
        "2 x tokens x sum(in x out) of the Linear layers + 4 x layers x T^2 x d of attention",
        "status": "measured",
        "reason": "int8 kernels do integer ops, which a FLOP counter does not see: their analytic "
        "count is given as ops",
    },
    {
        "resource": "computation",
        "metric": "utilization",
        "survey_section": "§2.2.1",
        "survey_definition": "the utilization of processing units like GPUs or TPUs",
        "unit": "fraction of peak FLOP/s",
        "how_here": "metrics.compute_utilization: counted FLOPs / median latency / device peak "
        "(CPU peak measured by a 2048^3 GEMM; GPU peak from the datasheet)",
        "status": "measured",
        "reason": "float models only (int8 ops are not FLOPs)",
    },
    {
        "resource": "computation",
        "metric": "training time",
        "survey_section": "§9.1.1",
        "survey_definition": "the total duration required to train an LLM, typically measured in "
        "wall-clock minutes, hours, or days",
        "unit": "s",
        "how_here": "wall-clock seconds of the student's distillation (the only training here)",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "computation",
        "metric": "inference time/latency",
        "survey_section": "§9.1.1",
        "survey_definition": "the time it takes for an LLM to generate an output after receiving an input",
        "unit": "s per batch",
        "how_here": "shared.timing.benchmark: one fixed batch, all models interleaved round-robin "
        "after warm-up; median and IQR",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "computation",
        "metric": "throughput",
        "survey_section": "§9.1.1",
        "survey_definition": "the rate at which LLMs can generate output tokens or complete tasks, "
        "typically measured in tokens per second (TPS) or queries per second",
        "unit": "sentences/s",
        "how_here": "texts embedded per second over the whole pool (length-sorted batches)",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "computation",
        "metric": "speed-up ratio",
        "survey_section": "§9.1.1",
        "survey_definition": "the quotient of the baseline execution time to the time taken by the improved LLM",
        "unit": "x",
        "how_here": "baseline median latency / technique median latency (same batch, same device)",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "memory",
        "metric": "number of parameters",
        "survey_section": "§9.1.2",
        "survey_definition": "the number of adjustable variables in the LLM's neural network",
        "unit": "parameters",
        "how_here": "metrics.model_size_report: logical weights, packed int8 weights included",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "memory",
        "metric": "model size",
        "survey_section": "§9.1.2",
        "survey_definition": "determined by the storage space required for storing the entire model",
        "unit": "bytes",
        "how_here": "metrics.model_size_report: bytes of every storage, torch.ao's packed int8 weights "
        "with their scales, bitsandbytes state; the pruned weights also as CSR",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "memory",
        "metric": "peak memory (inference)",
        "survey_section": "§9.1.2",
        "survey_definition": "the model size is often measured by the peak memory usage during "
        "training or inference",
        "unit": "bytes",
        "how_here": "metrics.MemorySampler around the pool's embedding: peak (VmHWM or CUDA "
        "max_memory_allocated) and time average (AMU), whole process and growth over the start",
        "status": "measured",
        "reason": "one process holds every model, so the whole-process figures include the others; "
        "the growth is this model's working memory",
    },
    {
        "resource": "energy",
        "metric": "energy consumption",
        "survey_section": "§9.1.3",
        "survey_definition": "typically expressed in Watt-hours (Wh) or Joules (J), reflecting the "
        "electrical power used during the LLM's lifecycle",
        "unit": "J per 1k sentences",
        "how_here": "metrics.Energy around the pool's embedding: NVML (GPU), RAPL (CPU) or a "
        "TDP x utilisation model",
        "status": "{energy_status}",
        "reason": "{energy_reason}",
    },
    {
        "resource": "energy",
        "metric": "carbon emission",
        "survey_section": "§9.1.3",
        "survey_definition": "calculated by multiplying the energy consumption (kWh) by the carbon "
        "intensity ... of the local power grid",
        "unit": "g CO2eq per 1k sentences",
        "how_here": "energy x carbon_intensity_g_per_kwh (a parameter, not this grid's live value)",
        "status": "estimate",
        "reason": "the grid's carbon intensity is an assumed constant",
    },
    {
        "resource": "money",
        "metric": "dollars per parameter",
        "survey_section": "§9.1.4",
        "survey_definition": "obtained by dividing the total cost of training (or running) the LLM "
        "by the number of parameters",
        "unit": "USD/parameter",
        "how_here": "not computed",
        "status": "not-applicable-here",
        "reason": "nothing is billed or metered here; a price per hour would be an invented constant "
        "times the times reported above",
    },
    {
        "resource": "network communication",
        "metric": "communication volume",
        "survey_section": "§9.1.5",
        "survey_definition": "the total amount of data (in megabytes, gigabytes, etc.) transmitted "
        "across the network during a specific LLM execution or training run",
        "unit": "bytes",
        "how_here": "bytes written to the sockets (/proc/self/io wchar) during one float32 gloo "
        "all-reduce among local ranks over localhost TCP, against the ring all-reduce's 2n(k-1)/k x 4 per rank",
        "status": "measured",
        "reason": "single-process inference sends nothing; the all-reduce (data-parallel training's "
        "collective) is measured over localhost TCP instead",
    },
    {
        "resource": "other",
        "metric": "compression ratio",
        "survey_section": "§9.1.6",
        "survey_definition": "quantifies the reduction in size of the compressed model compared to the original model",
        "unit": "x",
        "how_here": "baseline bytes / technique bytes; also EfficientLLM's Eq. 9 with MRR as the performance",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "other",
        "metric": "loyalty/fidelity",
        "survey_section": "§9.1.6",
        "survey_definition": "the resemblance between the teacher and student models in terms of both "
        "predictions consistency and predicted probability distributions alignment",
        "unit": "cosine; fraction",
        "how_here": "mean cosine of each text's embedding to the baseline's, and the fraction of "
        "queries whose top-1 code is the baseline's top-1",
        "status": "measured",
        "reason": "",
    },
    {
        "resource": "other",
        "metric": "robustness",
        "survey_section": "§9.1.6",
        "survey_definition": "after-attack accuracy and query number",
        "unit": "accuracy",
        "how_here": "not computed",
        "status": "not-applicable-here",
        "reason": "no adversarial attack is implemented in this project",
    },
    {
        "resource": "other",
        "metric": "Pareto optimality",
        "survey_section": "§9.1.6",
        "survey_definition": "identifying solutions that reside on the Pareto frontier — the boundary "
        "that delineates optimal trade-offs",
        "unit": "flag",
        "how_here": "metrics.pareto_front over (model bytes, median latency, -recall@1)",
        "status": "measured",
        "reason": "",
    },
]


def taxonomy_table(energy_source: str) -> pd.DataFrame:
    """TAXONOMY as a table; the energy row's status follows ``energy_source`` (metrics.Energy's label)."""
    estimated = energy_source.startswith("estimate")
    fill = {
        "energy_status": "estimate" if estimated else "measured",
        # the label's head says which counter or that it is the model (its numbers are the probe's)
        "energy_reason": (
            f"{energy_source.split(':')[0]}: (idle + (TDP - idle) x CPU utilisation) x time, "
            "metrics.Energy's power model" if estimated else energy_source
        ),
    }
    rows = [{k: v.format(**fill) if "{" in v else v for k, v in row.items()} for row in TAXONOMY]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# The task: docstring summary -> code, over a pool of functions
# ---------------------------------------------------------------------------------------
def retrieval_split(df: pd.DataFrame, pool_size: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pool, rest): ``pool_size`` rows of whole modules drawn in a seeded order, and the rows
    of every other module (the distillation texts), so no module is on both sides.

    Rows whose summary or code occurs twice in the dataset are dropped first: with a
    duplicate candidate the right answer would be ambiguous. The last module drawn may be
    cut to fill the pool exactly; its remaining rows go to neither side.
    """
    missing = {"module", "summary", "code"} - set(df.columns)
    if missing:
        raise ValueError(f"df: needs columns module, summary, code; missing {sorted(missing)}")
    unique = df[~df["summary"].duplicated(keep=False) & ~df["code"].duplicated(keep=False)]
    if len(unique) <= pool_size:
        raise ValueError(
            f"pool_size: {pool_size} asked, but only {len(unique)} docstring rows have a unique summary and "
            "code (the pool needs fewer, and the student needs the rest)"
        )
    modules = np.sort(unique["module"].unique())
    order = np.random.default_rng(seed).permutation(modules)
    sizes = unique.groupby("module").size()
    taken, chosen = 0, []
    for module in order:
        chosen.append(module)
        taken += sizes[module]
        if taken >= pool_size:
            break
    in_pool = unique["module"].isin(chosen)
    pool = unique[in_pool]
    draw_rank = pool["module"].map({module: i for i, module in enumerate(chosen)})
    pool = pool.iloc[np.argsort(draw_rank.to_numpy(), kind="stable")].head(pool_size).reset_index(drop=True)
    rest = unique[~in_pool].reset_index(drop=True)
    return pool, rest


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states that are not padding (sentence-transformers' pooling)."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def tokenize(tokenizer, texts: list[str], max_len: int, device, pad_to_max: bool = False) -> dict[str, torch.Tensor]:
    batch = tokenizer(
        list(texts), truncation=True, max_length=max_len, padding="max_length" if pad_to_max else True,
        return_tensors="pt",
    )  # fmt: skip
    return {k: v.to(device) for k, v in batch.items()}


def forward_embed(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled (not normalised) sentence embeddings of a tokenized batch, float32."""
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return mean_pool(hidden.float(), batch["attention_mask"])


@torch.inference_mode()
def embed(
    model,
    tokenizer,
    texts: list[str],
    *,
    batch_size: int,
    max_len: int,
    device="cpu",
    normalize: bool = True,
    progress: Callable | None = None,
    desc: str = "embed",
) -> torch.Tensor:
    """Sentence embeddings [len(texts), d] (float32, on the CPU, in the order of ``texts``).
    Texts are batched by length (stable sort), so little of each batch is padding."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    starts = range(0, len(texts), batch_size)
    out = torch.empty(0)
    for start in (progress or silent)(starts, desc=desc, total=len(starts)):
        idx = order[start : start + batch_size]
        vectors = forward_embed(model, tokenize(tokenizer, [texts[i] for i in idx], max_len, device)).cpu()
        if out.numel() == 0:
            out = torch.empty(len(texts), vectors.shape[1])
        out[torch.as_tensor(idx)] = vectors
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def retrieval_scores(queries: torch.Tensor, candidates: torch.Tensor) -> dict[str, float]:
    """recall@1 and MRR when query i's answer is candidate i (rows: unit vectors, or any scores)."""
    if queries.shape != candidates.shape:
        raise ValueError(f"queries/candidates: need equal shapes, got {tuple(queries.shape)} and {tuple(candidates.shape)}")
    return scores_from_similarity(queries @ candidates.T)


def scores_from_similarity(sim: torch.Tensor) -> dict[str, float]:
    """recall@1 and MRR from a square similarity matrix whose diagonal holds the right pairs.
    A tie with the right answer counts against it (rank = 1 + candidates scoring >= it, others)."""
    sim = torch.as_tensor(sim, dtype=torch.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] == 0:
        raise ValueError(f"sim: need a non-empty square matrix, got shape {tuple(sim.shape)}")
    gold = sim.diagonal().unsqueeze(1)
    ranks = (sim >= gold).sum(1)  # the gold itself counts once: rank 1 when nothing else ties or beats it
    return {"recall_at_1": float((ranks == 1).double().mean()), "mrr": float((1.0 / ranks.double()).mean())}


def fidelity(q: torch.Tensor, c: torch.Tensor, q_ref: torch.Tensor, c_ref: torch.Tensor) -> dict[str, float]:
    """The survey's loyalty/fidelity for an embedding model: mean cosine of every text's
    embedding to the reference model's, and the fraction of queries whose top-1 candidate is
    the reference's top-1 (prediction consistency). Inputs are unit vectors."""
    cos = torch.cat([(q * q_ref).sum(1), (c * c_ref).sum(1)])
    top1 = (q @ c.T).argmax(1)
    top1_ref = (q_ref @ c_ref.T).argmax(1)
    return {"fidelity_cosine": float(cos.mean()), "top1_agreement": float((top1 == top1_ref).double().mean())}


# ---------------------------------------------------------------------------------------
# The techniques
# ---------------------------------------------------------------------------------------
def drop_pooler(model):
    """Remove BERT's [CLS] pooler (mean pooling never reads it); returns the model."""
    model.pooler = None
    return model


def linear_shapes(model) -> list[tuple[str, int, int]]:
    """(name, in_features, out_features) of every Linear-like layer of the encoder, float or
    quantized (torch.ao's dynamic Linear is not an nn.Linear; bitsandbytes' Linear8bitLt is)."""
    return [
        (name, mod.in_features, mod.out_features)
        for name, mod in model.named_modules()
        if _in_a_block(name) and isinstance(getattr(mod, "in_features", None), int) and hasattr(mod, "out_features")
    ]


def _in_a_block(name: str) -> bool:
    """Inside the repeated blocks: BERT's ``encoder.layer.N``, a decoder's ``model.layers.N``."""
    return ".layer." in f".{name}" or ".layers." in f".{name}"


def encoder_linears(model) -> list[tuple[str, torch.nn.Linear]]:
    """The blocks' nn.Linear layers (attention q/k/v/output, FFN up/down), in order: not the
    embeddings, not a language model's head (tied to the embedding)."""
    return [(name, mod) for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear) and _in_a_block(name)]


def quantize_int8_dynamic(model, qscheme: str = "per_channel"):
    """A copy with the blocks' nn.Linear layers replaced by torch's dynamic int8 Linear (CPU only).

    torch.ao.quantization is deprecated in favour of torchao, but its fbgemm/oneDNN dynamic
    int8 kernels are still the strongest int8 Linear a stock CPU PyTorch runs; the warning
    is silenced here and documented in the README."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfigs = {"per_channel": per_channel_dynamic_qconfig, "per_tensor": default_dynamic_qconfig}
    if qscheme not in qconfigs:
        raise ValueError(f"qscheme: {qscheme!r} is not allowed; allowed: {', '.join(qconfigs)}")
    source = copy.deepcopy(model).float().cpu().eval()
    spec = {name: qconfigs[qscheme] for name, _ in encoder_linears(source)}  # the blocks' Linear layers
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return quantize_dynamic(source, spec, dtype=torch.qint8)


def quantize_int8_bnb(model, device="cpu", threshold: float = 6.0):
    """A copy with the encoder's nn.Linear layers replaced by bitsandbytes Linear8bitLt
    (LLM.int8: int8 weights with per-row scales; input columns above ``threshold`` run in
    16-bit), quantized when moved to ``device``."""
    import logging

    import bitsandbytes as bnb

    # It logs a warning on every int8 matmul that fp32 inputs are cast to fp16 (its int8 path
    # quantizes from 16-bit): expected here, and thousands of lines in an executed notebook.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    source = copy.deepcopy(model).float().cpu().eval()
    for name, linear in encoder_linears(source):
        parent = source.get_submodule(name.rsplit(".", 1)[0])
        q = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            has_fp16_weights=False, threshold=threshold,
        )  # fmt: skip
        q.load_state_dict(linear.state_dict())
        setattr(parent, name.rsplit(".", 1)[1], q)
    return source.to(device).eval()


def prune_magnitude(model, amount: float):
    """A copy whose encoder Linear weights have their ``amount`` smallest-magnitude entries,
    ranked globally across all of them, set to zero (torch.nn.utils.prune.global_unstructured
    with L1Unstructured; the masks are then made permanent, so the weights stay dense tensors)."""
    from torch.nn.utils import prune

    if not 0.0 < amount < 1.0:
        raise ValueError(f"amount: a fraction in (0, 1), got {amount!r}")
    pruned = copy.deepcopy(model)
    targets = [(linear, "weight") for _, linear in encoder_linears(pruned)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for linear, name in targets:
        prune.remove(linear, name)
    return pruned


def zero_fraction(model) -> float:
    """Fraction of exact zeros among the encoder's Linear weights."""
    weights = [linear.weight for _, linear in encoder_linears(model)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def csr_bytes(weight: torch.Tensor, index_dtype: torch.dtype = torch.int64) -> int:
    """Bytes of ``weight`` stored as a CSR matrix: values, column indices and row pointers.
    torch stores CSR indices as int64 unless built with int32 ones."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")  # CSR is "beta"; invariant checks off
        csr = weight.detach().to_sparse_csr()
        if index_dtype != torch.int64:
            csr = torch.sparse_csr_tensor(
                csr.crow_indices().to(index_dtype), csr.col_indices().to(index_dtype), csr.values(), csr.shape
            )
    parts = (csr.values(), csr.col_indices(), csr.crow_indices())
    return sum(t.numel() * t.element_size() for t in parts)


def linear_weight_bytes(model, sparse: torch.dtype | None = None) -> int:
    """Bytes of the encoder's Linear weights as stored (dense), or as CSR with ``sparse``
    index dtype (torch.int64 or torch.int32)."""
    weights = [linear.weight.detach() for _, linear in encoder_linears(model)]
    if sparse is None:
        return sum(w.numel() * w.element_size() for w in weights)
    return sum(csr_bytes(w, sparse) for w in weights)


def _packed_tensors(module) -> dict[str, list[torch.Tensor]]:
    """What a torch.ao dynamic int8 Linear holds in its packed format: the qint8 weight, its
    scales and zero points (per channel: tensors; per tensor: two numbers inside the weight,
    listed as none here) and the fp32 bias. Every call unpacks fresh copies."""
    weight, bias = module._packed_params._weight_bias()
    per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    scales = [weight.q_per_channel_scales(), weight.q_per_channel_zero_points()] if per_channel else []
    return {"weight": [weight], "scales": scales, "bias": [bias] if bias is not None else []}


def int8_linear_weight_bytes(model) -> int:
    """Bytes of the int8 Linear weights of a quantized model with their scales and zero
    points (biases excluded, like `linear_weight_bytes`), from the storage itself."""
    total = 0
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):  # torch.ao dynamic Linear
            parts = _packed_tensors(module)
            total += parts["weight"][0].untyped_storage().nbytes()
            # per tensor: one float64 scale and one int64 zero point, kept inside the weight
            total += sum(t.numel() * t.element_size() for t in parts["scales"]) if parts["scales"] else 8 + 8
        elif type(module).__name__ == "Linear8bitLt":  # bitsandbytes: int8 weight + per-row SCB
            total += module.weight.numel() * module.weight.element_size()
            scb = getattr(module.weight, "SCB", None)
            if scb is None and getattr(module, "state", None) is not None:
                scb = module.state.SCB
            total += 0 if scb is None else scb.numel() * scb.element_size()
    return total


def magnitude_masks(weights: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Keep-masks zeroing the ``sparsity`` fraction of smallest magnitudes across all
    ``weights`` together (global magnitude pruning, as `prune_magnitude` does; by a
    k-th-value threshold, which is faster than prune's top-k and the same when no two
    magnitudes tie at the threshold)."""
    magnitudes = torch.cat([w.detach().abs().flatten().float() for w in weights])
    k = round(sparsity * magnitudes.numel())
    if k == 0:
        return [torch.ones_like(w, dtype=torch.bool) for w in weights]
    threshold = torch.kthvalue(magnitudes, k).values
    return [w.detach().abs() > threshold for w in weights]


def csr_sweep(model, sparsities: list[float]) -> pd.DataFrame:
    """Dense and CSR bytes of the encoder's Linear weights (float32) after global magnitude
    pruning to each sparsity (0 = the weights as they are), the CSR matrices built by torch
    (int64 indices, its default) and again with int32 indices."""
    weights = [linear.weight.detach().float().cpu() for _, linear in encoder_linears(model)]
    rows = []
    for sparsity in sorted(sparsities):
        tensors = [w * m for w, m in zip(weights, magnitude_masks(weights, sparsity))]
        dense = sum(t.numel() * t.element_size() for t in tensors)
        zeros = sum(int((t == 0).sum()) for t in tensors)
        csr64 = sum(csr_bytes(t, torch.int64) for t in tensors)
        csr32 = sum(csr_bytes(t, torch.int32) for t in tensors)
        rows.append({
            "sparsity": sparsity, "zero_fraction": zeros / sum(t.numel() for t in tensors), "dense_bytes": dense,
            "csr_int64_bytes": csr64, "csr_int32_bytes": csr32,
            "csr_int64_ratio": csr64 / dense, "csr_int32_ratio": csr32 / dense,
        })  # fmt: skip
    return pd.DataFrame(rows)


def break_even(x, ratio) -> float:
    """The x at which ``ratio`` (sorted by x) first falls through 1, by linear interpolation
    between the two sweep points around it; NaN if it never does."""
    x, ratio = np.asarray(x, dtype=float), np.asarray(ratio, dtype=float)
    for i in range(1, len(x)):
        if ratio[i - 1] >= 1.0 > ratio[i]:
            return float(x[i - 1] + (ratio[i - 1] - 1.0) * (x[i] - x[i - 1]) / (ratio[i - 1] - ratio[i]))
    return float("nan")


def make_student(teacher, layers: list[int]):
    """A copy of ``teacher`` keeping only encoder layers ``layers`` (in that order), with
    their weights: the embeddings and the kept layers start as the teacher's."""
    if not layers or any(not 0 <= i < len(teacher.encoder.layer) for i in layers):
        raise ValueError(f"layers: indices of the teacher's {len(teacher.encoder.layer)} layers, got {layers}")
    student = copy.deepcopy(teacher)
    student.encoder.layer = torch.nn.ModuleList([student.encoder.layer[i] for i in layers])
    student.config.num_hidden_layers = len(layers)
    for new_index, layer in enumerate(student.encoder.layer):  # keep per-layer indices consistent
        attention = getattr(layer.attention, "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index
    return student


@dataclass(frozen=True)
class DistillConfig:
    steps: int
    batch_size: int
    max_len: int
    lr: float
    warmup_fraction: float
    cosine_weight: float
    freeze_embeddings: bool


def distill(
    student,
    targets: torch.Tensor,
    texts: list[str],
    tokenizer,
    cfg: DistillConfig,
    *,
    device="cpu",
    seed: int = 0,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """Train ``student`` (in place, fp32 weights; bf16 autocast on CUDA) so that its
    mean-pooled embedding of ``texts[i]`` matches ``targets[i]`` (the teacher's, not
    normalised): loss = MSE + cosine_weight x (1 - cosine). AdamW, linear warm-up then linear
    decay to 0; each epoch visits the texts in a seeded random order. Returns the history
    (step, lr, loss, mse, cosine) per step."""
    if len(texts) != len(targets) or len(texts) < cfg.batch_size:
        raise ValueError(f"texts/targets: need equal lengths >= batch_size, got {len(texts)}, {len(targets)}")
    student.float().to(device).train()
    if cfg.freeze_embeddings:
        student.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    warmup = max(1, int(cfg.warmup_fraction * cfg.steps))

    def lr_at(step: int) -> float:
        return cfg.lr * (step + 1) / warmup if step < warmup else cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - warmup))

    rng = np.random.default_rng(seed)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # dropout masks
    order, cursor, rows = rng.permutation(len(texts)), 0, []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else torch.autocast("cpu", enabled=False)
    try:
        for step in (progress or silent)(range(cfg.steps), desc="distill", total=cfg.steps):
            if cursor + cfg.batch_size > len(order):
                order, cursor = rng.permutation(len(texts)), 0
            idx = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
            batch = tokenize(tokenizer, [texts[i] for i in idx], cfg.max_len, device)
            target = targets[torch.as_tensor(idx)].to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            with autocast:
                out = forward_embed(student, batch)
            mse = torch.nn.functional.mse_loss(out, target)
            cos = torch.nn.functional.cosine_similarity(out, target, dim=-1).mean()
            loss = mse + cfg.cosine_weight * (1.0 - cos)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rows.append({"step": step + 1, "lr": lr_at(step), "loss": loss.item(), "mse": mse.item(), "cosine": cos.item()})
    finally:
        torch.random.set_rng_state(generator_state)
        student.eval()
    for p in student.parameters():
        p.requires_grad_(True)
    return pd.DataFrame(rows, columns=["step", "lr", "loss", "mse", "cosine"])


# ---------------------------------------------------------------------------------------
# FLOPs: torch's counter against the analytic count
# ---------------------------------------------------------------------------------------
def analytic_flops(model, batch: int, seq_len: int) -> dict[str, int]:
    """2 FLOPs per multiply-add of a forward pass over [batch, seq_len] tokens: the encoder's
    Linear layers (2 x tokens x in x out each) and attention (Q K^T and A V: 2 x 2 x T^2 x d per
    sequence and layer). Softmax, GELU, LayerNorm and the embedding lookup are not counted
    (FlopCounterMode does not count them either)."""
    tokens = batch * seq_len
    linear = sum(2 * tokens * fan_in * fan_out for _, fan_in, fan_out in linear_shapes(model))
    layers, d = len(model.encoder.layer), model.config.hidden_size
    attention = layers * 2 * 2 * batch * seq_len * seq_len * d
    return {"linear": linear, "attention": attention, "total": linear + attention}


def counted_flops(model, batch: dict[str, torch.Tensor], attn_implementation: str | None = "eager") -> dict[str, int]:
    """FLOPs of one forward by torch.utils.flop_counter, split into Linear matmuls and attention
    matmuls. ``attn_implementation="eager"`` runs attention as explicit matmuls for the count
    (FlopCounterMode does not count the CPU SDPA kernel); None keeps the model's own."""
    from torch.utils.flop_counter import FlopCounterMode

    previous = getattr(model.config, "_attn_implementation", None)
    if attn_implementation is not None and previous != attn_implementation:
        model.set_attn_implementation(attn_implementation)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            forward_embed(model, batch)
    finally:
        if attn_implementation is not None and previous not in (None, attn_implementation):
            model.set_attn_implementation(previous)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    linear = sum(n for op, n in by_op.items() if op in LINEAR_OPS)
    attention = sum(n for op, n in by_op.items() if op in ATTENTION_OPS)
    return {"linear": linear, "attention": attention, "total": int(counter.get_total_flops())}


# ---------------------------------------------------------------------------------------
# Network communication: bytes of a gloo all-reduce between local processes
# ---------------------------------------------------------------------------------------
def ring_allreduce_bytes(numel: int, world_size: int, element_size: int = FP32_BYTES) -> float:
    """Bytes each rank sends in a ring all-reduce (reduce-scatter + all-gather): 2 n (k-1)/k elements."""
    return 2 * numel * (world_size - 1) / world_size * element_size


def _written_bytes() -> int:
    """Bytes this process has written with write()/writev() since it started (/proc/self/io
    wchar): gloo's TCP transport sends with writev; ordinary sockets' send() is not counted."""
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("wchar:")).split()[1])


def allreduce_volume(world_size: int, numel: int, timeout_s: float = 60.0) -> dict[str, float]:
    """Bytes sent over the network by one float32 all-reduce of ``numel`` elements among
    ``world_size`` ranks: gloo process groups talking over localhost TCP, one thread per rank
    in this process (the same transport and protocol as one process per rank, without the
    seconds each extra Python process takes to import torch). Measured as the growth of this
    process's written-bytes counter during the call (all ranks together), next to the ring
    all-reduce's 2n(k-1)/k elements per rank. One untimed all-reduce first sets up the
    connections."""
    import threading
    from datetime import timedelta

    import torch.distributed as dist

    if world_size < 2 or numel < world_size:
        raise ValueError(f"world_size/numel: need world_size >= 2 and numel >= world_size, got {world_size}, {numel}")
    store = dist.HashStore()
    groups: list = [None] * world_size
    errors: list[BaseException] = []

    def on_every_rank(fn) -> None:
        def body(rank: int) -> None:
            try:
                fn(rank)
            except BaseException as exc:  # re-raised in the caller below
                errors.append(exc)

        threads = [threading.Thread(target=body, args=(rank,), daemon=True) for rank in range(world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout_s)
        if errors or any(thread.is_alive() for thread in threads):
            raise RuntimeError(f"all-reduce: {errors[0] if errors else f'no result within {timeout_s:g} s'}")

    def connect(rank: int) -> None:
        groups[rank] = dist.ProcessGroupGloo(store, rank, world_size, timedelta(seconds=timeout_s))

    tensors = [torch.ones(numel) for _ in range(world_size)]
    try:
        on_every_rank(connect)
        on_every_rank(lambda rank: groups[rank].allreduce([tensors[rank]]).wait())  # warm-up
        tensors = [torch.full((numel,), float(rank + 1)) for rank in range(world_size)]
        before, start = _written_bytes(), time.perf_counter()
        on_every_rank(lambda rank: groups[rank].allreduce([tensors[rank]]).wait())
        seconds, sent = time.perf_counter() - start, _written_bytes() - before
    finally:
        for group in groups:  # without it the interpreter aborts at exit (gloo threads still alive)
            if group is not None and hasattr(group, "shutdown"):
                group.shutdown()
        groups.clear()
    expected = world_size * ring_allreduce_bytes(numel, world_size)
    return {
        "world_size": world_size,
        "numel": numel,
        "sent_bytes": sent,
        "expected_bytes": expected,
        "ratio": sent / expected,
        "seconds": seconds,
        "correct": all(bool(torch.all(t == world_size * (world_size + 1) / 2)) for t in tensors),
    }


# ---------------------------------------------------------------------------------------
# Measuring one technique
# ---------------------------------------------------------------------------------------
@dataclass
class Embedded:
    queries: torch.Tensor
    codes: torch.Tensor
    seconds: float
    memory: metrics.MemorySampler
    energy: metrics.Energy


def embed_pool(model, tokenizer, pool: pd.DataFrame, *, batch_size: int, max_len: int, device="cpu",
               progress: Callable | None = None, name: str = "") -> Embedded:  # fmt: skip
    """Embed the pool's summaries and code under one memory sampler and one energy meter."""
    with metrics.Energy(device) as energy, metrics.MemorySampler(device) as memory:
        start = time.perf_counter()
        q = embed(model, tokenizer, pool["summary"].tolist(), batch_size=batch_size, max_len=max_len,
                  device=device, progress=progress, desc=f"{name} queries")  # fmt: skip
        c = embed(model, tokenizer, pool["code"].tolist(), batch_size=batch_size, max_len=max_len,
                  device=device, progress=progress, desc=f"{name} code")  # fmt: skip
        seconds = time.perf_counter() - start
    return Embedded(q, c, seconds, memory, energy)


def technique_row(
    name: str,
    model,
    device: str,
    emb: Embedded,
    reference: Embedded,
    flops: dict[str, int],
    flops_analytic: dict[str, int],
    latency_batch: int,
    carbon_g_per_kwh: float,
) -> dict:
    """One row of the techniques table: every metric family for one model (latency is added
    by the caller, which times all models together)."""
    size = metrics.model_size_report(model)
    n_texts = len(emb.queries) + len(emb.codes)
    energy_per_1k = emb.energy.joules / n_texts * 1000
    return {
        "technique": name,
        "device": device,
        "parameters": size["parameters"],
        "model_bytes": size["total_bytes"],
        "bits_per_parameter": size["bits_per_parameter"],
        "bytes_by_dtype": size["bytes_by_dtype"],
        **retrieval_scores(emb.queries, emb.codes),
        **fidelity(emb.queries, emb.codes, reference.queries, reference.codes),
        "flops_counted_per_sentence": flops["total"] / latency_batch,
        "flops_counted_linear_per_sentence": flops["linear"] / latency_batch,
        "flops_analytic_per_sentence": flops_analytic["total"] / latency_batch,
        "throughput_sentences_per_s": n_texts / emb.seconds,
        "pool_seconds": emb.seconds,
        "mem_peak_bytes": emb.memory.peak_bytes,
        "mem_avg_bytes": emb.memory.avg_bytes,
        "mem_peak_growth_bytes": emb.memory.peak_bytes - emb.memory.start_bytes,
        "mem_source": emb.memory.peak_source,
        "energy_j_per_1k_sentences": energy_per_1k,
        "co2_g_per_1k_sentences": energy_per_1k / 3.6e6 * carbon_g_per_kwh,
        "energy_source": emb.energy.source,
    }


def add_relative_columns(table: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """Compression ratio, EfficientLLM's MCR (Eq. 9, MRR as the performance), speed-up, the
    recall drop in points, and the Pareto flag over (bytes, latency, -recall@1)."""
    table = table.copy()
    base = table.set_index("technique").loc[baseline]
    table["compression_ratio"] = base["model_bytes"] / table["model_bytes"]
    table["mcr_mrr"] = [
        metrics.compression_rate(float(base["model_bytes"]), float(b), float(base["mrr"]), float(m))
        for b, m in zip(table["model_bytes"], table["mrr"])
    ]
    table["speedup"] = base["latency_median_s"] / table["latency_median_s"]
    table["recall_drop_points"] = 100 * (base["recall_at_1"] - table["recall_at_1"])
    table["pareto"] = metrics.pareto_front(table, minimize=["model_bytes", "latency_median_s"], maximize=["recall_at_1"])
    return table


# ---------------------------------------------------------------------------------------
# The same harness on a language model: a decoder of the shared tinylm artifact
# ---------------------------------------------------------------------------------------
def lm_techniques(
    model,
    batches: list,
    *,
    qscheme: str,
    prune_amount: float,
    repeats: int,
    warmup: int,
    num_threads: int,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """int8-dynamic and magnitude pruning of a causal LM's block Linear layers, measured like
    the encoder: storage bytes, validation perplexity (lower is better), MCR (Eq. 9 of
    EfficientLLM with the perplexity reading: size ratio x ppl_base / ppl), and the median
    latency of a forward pass over one batch (interleaved). CPU, fp32 activations."""
    from shared import timing

    model = model.float().cpu().eval()
    variants = {
        "baseline": model,
        "int8-dynamic": quantize_int8_dynamic(model, qscheme),
        "pruned": prune_magnitude(model, prune_amount),
    }
    x = batches[0][0]

    def forward(m):
        def call():
            with torch.inference_mode():
                m(x)
        return call

    times = timing.benchmark(
        {name: forward(m) for name, m in variants.items()},
        repeats=repeats, warmup=warmup, num_threads=num_threads, progress=progress,
    )  # fmt: skip
    rows = []
    for name, m in variants.items():
        size = metrics.model_size_report(m)
        rows.append({
            "technique": name,
            "storage_bytes": int(size["total_bytes"]),
            "block_linear_zero_fraction": zero_fraction(m) if name != "int8-dynamic" else 0.0,
            "perplexity": metrics.perplexity(m, batches),
            "latency_median_s": times[name].median_s,
            "latency_iqr_s": times[name].iqr_s,
        })  # fmt: skip
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    table["compression"] = base["storage_bytes"] / table["storage_bytes"]
    table["perplexity_ratio"] = table["perplexity"] / base["perplexity"]
    table["mcr"] = [
        metrics.compression_rate(base["storage_bytes"], r.storage_bytes, base["perplexity"], r.perplexity, higher_is_better=False)
        for r in table.itertuples()
    ]
    table["latency_ratio"] = table["latency_median_s"] / base["latency_median_s"]
    return table
