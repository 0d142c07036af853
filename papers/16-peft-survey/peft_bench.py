"""A measured PEFT benchmark: every method on one real fine-tuning task, the same budget.

The survey (Han et al. 2024) compares PEFT methods by what they train and what they cost;
its numbers come from many papers, models and tasks. Here every method fine-tunes the same
real pretrained model — all-MiniLM-L6-v2 (`shared.zoo.minilm`, BertForSequenceClassification,
22.7 M parameters) — on the same real task — a docstring summary -> the top-level stdlib
package it comes from (`shared.corpus.package_classification`) — and we measure, per method:

- trainable parameters, in all and without the classifier head (which every method trains),
  as a share of the base model's parameters;
- optimizer-state bytes, summed over the AdamW state tensors after the first step;
- training-state bytes: every parameter (frozen ones too; 4-bit weights as stored) + the
  gradients of the trainable ones + the optimizer state (exact; `shared.metrics.tensor_bytes`);
- peak and time-averaged memory while the method's model is built and trained
  (`shared.metrics.MemorySampler`: process RSS on CPU, torch's allocated bytes on CUDA), and
  the peak's growth over the level before the model was built;
- the median wall-clock time of a training step;
- inference latency of one fixed batch, before and after merging the update into the
  weights (`merge_and_unload`), each timed interleaved with the untouched base model so the
  ratio to the base is robust to the machine's mood (`shared.timing.benchmark`);
- test accuracy after the same number of epochs.

Fairness: every method starts from the same weights (one base model, deep-copied, with one
freshly initialised head), sees the same batches in the same order with the same seed (so the
same dropout masks where shapes agree), trains the head with the same ``head_lr`` and its own
parameters with its own ``lr`` (PEFT methods usually want ~10x full fine-tuning's), under the
same warm-up + linear-decay schedule and gradient clipping.

Methods come from `paper16.methods.REGISTRY` (the survey's taxonomy); the peft-built ones take
their options from the config, checked against the peft config class before anything trains.
A method that peft cannot attach to this model (prefix tuning needs a KV cache, which
transformers 5's BERT no longer takes) gets a row with ``status`` saying why, and no numbers.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from paper16.methods import ADALORA_FRACTIONS, REGISTRY, check_name
from shared import metrics, timing
from shared.progress import silent

HEAD = "classifier"  # BertForSequenceClassification's head; peft trains a copy under the same name
TASK_TYPE = "SEQ_CLS"
MERGE_CHECK_ATOL = 1e-4  # |logits merged - unmerged| above this gets a note (4-bit re-quantization)
# QLoRA (Dettmers et al. 2023): the frozen base in 4-bit NormalFloat with double quantization;
# the head stays in full precision (it is trained), as do embeddings and LayerNorms
# (bitsandbytes quantizes nn.Linear layers only).
QLORA_QUANT = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, llm_int8_skip_modules=[HEAD])


# ---------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] int64
    attention_mask: torch.Tensor  # [B, T] int64
    labels: torch.Tensor  # [B] int64

    def to(self, device: str) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def collate(ids: Sequence[Sequence[int]], labels: Sequence[int], pad_id: int, length: int | None = None) -> Batch:
    """Right-pad token id lists to their longest (or to ``length``) with an attention mask."""
    width = length or max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        row = row[:width]
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return Batch(torch.from_numpy(input_ids), torch.from_numpy(mask), torch.tensor(np.array(labels, dtype=np.int64)))


def encode(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def train_batches(ids, labels, batch_size: int, epochs: int, pad_id: int, seed: int) -> list[Batch]:
    """Every training batch of every epoch, in order: epoch e is a permutation drawn from
    (seed, e), so the order is the same for every method (and every run)."""
    labels = np.asarray(labels)
    out = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(ids))
        for start in range(0, len(order), batch_size):
            pick = order[start : start + batch_size]
            out.append(collate([ids[i] for i in pick], labels[pick], pad_id))
    return out


def eval_batches(ids, labels, batch_size: int, pad_id: int) -> list[Batch]:
    labels = np.asarray(labels)
    return [collate(ids[s : s + batch_size], labels[s : s + batch_size], pad_id) for s in range(0, len(ids), batch_size)]


# ------------------------------------------------------------------------------------ methods


def peft_config_class(name: str):
    import peft

    return getattr(peft, REGISTRY[name].peft_config)


def check_options(methods: dict) -> None:
    """Every option of every method names a field of its peft config class (one line otherwise);
    hand-made methods take none. Run before anything trains."""
    for name, settings in methods.items():
        method = check_name(name)
        options = set(settings.options)
        if method.peft_config is None:
            if options:
                raise ValueError(f"methods.{name}.options: {name} is built by hand and takes no options (got {sorted(options)})")
            continue
        cls = peft_config_class(name)
        allowed = {f.name for f in dataclasses.fields(cls)} - {"task_type", "peft_type"}
        if cls.__name__ == "AdaLoraConfig":
            allowed |= set(ADALORA_FRACTIONS)
        for key in sorted(options):
            if key not in allowed:
                raise ValueError(f"methods.{name}.options.{key}: not an option of peft.{cls.__name__}; allowed: {', '.join(sorted(allowed))}")
            if key in method.fixed:
                raise ValueError(f"methods.{name}.options.{key}: fixed to {method.fixed[key]!r} by the method itself")


def peft_config(name: str, options: dict, total_steps: int):
    """The peft config of a method: its options, its defining flags, and for AdaLoRA the
    rank-allocation schedule in steps (the config gives fractions of the training steps)."""
    cls = peft_config_class(name)
    kwargs = dict(options)
    if cls.__name__ == "AdaLoraConfig":
        fractions = {k: kwargs.pop(k, 0.0) for k in ADALORA_FRACTIONS}
        kwargs.update(
            total_step=total_steps,
            tinit=int(fractions["tinit_fraction"] * total_steps),
            tfinal=int(fractions["tfinal_fraction"] * total_steps),
        )
    return cls(task_type=TASK_TYPE, **kwargs, **REGISTRY[name].fixed)


class Unsupported(RuntimeError):
    """peft cannot attach the method to this model; the message says why."""


def load_4bit(base, compute_dtype: torch.dtype, device: str):
    """The same pretrained MiniLM with its linear layers in 4-bit NF4 (bitsandbytes) and the
    base model's freshly initialised head copied in, prepared for k-bit training."""
    import importlib

    import peft
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    from shared import zoo

    path = importlib.import_module(zoo.MINILM).get_model_path()
    quant = BitsAndBytesConfig(**QLORA_QUANT, bnb_4bit_compute_dtype=compute_dtype)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=base.config.num_labels, local_files_only=True, quantization_config=quant, device_map=device
    )
    model.get_submodule(HEAD).load_state_dict(base.get_submodule(HEAD).state_dict())
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def build_model(name: str, options: dict, base, *, total_steps: int, device: str, compute_dtype=torch.float32):
    """The model method ``name`` trains: a deep copy of ``base`` (a 4-bit reload for QLoRA)
    with the method's trainable parameters, and the classifier head trainable in every method."""
    import peft

    method = check_name(name)
    model = load_4bit(base, compute_dtype, device) if method.quantized_base else copy.deepcopy(base)
    if method.peft_config is None:  # hand-made: full, head only, BitFit
        for pname, param in model.named_parameters():
            is_head = pname.split(".")[0] == HEAD
            param.requires_grad_(name == "full" or is_head or (name == "bitfit" and pname.endswith(".bias")))
        return model
    config = peft_config(name, options, total_steps)  # a bad option value fails here, loudly
    try:
        model = peft.get_peft_model(model, config)
        _probe(model)
    except (ValueError, NotImplementedError) as exc:  # peft's word that the method does not fit this model
        raise Unsupported(str(exc).split("\n")[0]) from None
    return model


def _probe(model) -> None:
    """One tiny forward pass, so a method peft attaches but cannot run (prefix tuning on a
    model without a KV cache) fails at build time. In training mode: a 4-bit model switched
    to eval on CPU repacks its weights for inference and cannot train afterwards."""
    device = next(model.parameters()).device
    ids = torch.ones(1, 4, dtype=torch.long, device=device)
    model.train()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))


def is_head(param_name: str) -> bool:
    return HEAD in param_name.split(".")


def param_counts(model) -> dict[str, int]:
    """Trainable parameters in all and in the head (unique tensors, logical element counts)."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    head = sum(p.numel() for n, p in trainable.items() if is_head(n))
    total = sum(p.numel() for p in trainable.values())
    return {"trainable_params": total, "head_params": head, "method_params": total - head}


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (AdamW: exp_avg, exp_avg_sq, step)."""
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))


def make_optimizer(model, lr: float, head_lr: float, weight_decay: float, name: str = ""):
    head = [p for n, p in model.named_parameters() if p.requires_grad and is_head(n)]
    body = [p for n, p in model.named_parameters() if p.requires_grad and not is_head(n)]
    if not head:
        raise RuntimeError(f"{name}: the classifier head is not trainable; every method trains it")
    groups = [{"params": head, "lr": head_lr}] + ([{"params": body, "lr": lr}] if body else [])
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def warmup_linear(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up over the first steps, then linear decay to 0."""
    warmup = int(round(warmup_fraction * total_steps))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return multiplier


def _autocast(device: str, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    return nullcontext()


def _release_memory() -> None:
    """Free what the previous method left, so the next one's memory growth starts from the floor."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed heap pages otherwise
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------- measuring


@torch.no_grad()
def accuracy(model, batches: Sequence[Batch], device: str, dtype: str = "float32") -> float:
    """Test accuracy in percent."""
    model.eval()
    hits = count = 0
    for batch in batches:
        batch = batch.to(device)
        with _autocast(device, dtype):
            logits = model(**batch.inputs).logits
        hits += int((logits.argmax(-1) == batch.labels).sum())
        count += len(batch.labels)
    return 100.0 * hits / count


def latency_vs_base(model, base, batch: Batch, *, repeats: int, warmup: int, device: str, dtype: str = "float32"):
    """Median seconds of one forward pass of ``model`` and of ``base`` on ``batch``, timed
    round-robin (interleaved) so a slow phase of the machine hits both."""
    inputs = batch.to(device).inputs

    def forward(m):
        def call():
            with torch.no_grad(), _autocast(device, dtype):
                return m(**inputs).logits

        return call

    model.eval()
    base.eval()
    result = timing.benchmark({"model": forward(model), "base": forward(base)}, repeats=repeats, warmup=warmup, device=device)
    return result["model"].median_s, result["base"].median_s


def train(model, optimizer, batches: Sequence[Batch], *, schedule, grad_clip: float, device: str, dtype: str,
          adalora: bool = False, progress=silent, desc: str = "") -> dict:  # fmt: skip
    """The training loop: loss, backward, clip, step (AdaLoRA reallocates its ranks after each
    step), with the wall-clock time of every step and the optimizer state after the first."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    losses, seconds, state_bytes = [], [], 0
    for step, batch in enumerate(progress(batches, desc=desc, total=len(batches))):
        batch = batch.to(device)
        timing.synchronize(device)
        start = time.perf_counter()
        with _autocast(device, dtype):
            loss = model(**batch.inputs, labels=batch.labels).loss  # AdaLoRA adds its orthogonality penalty
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()
        scheduler.step()
        if adalora:
            model.base_model.update_and_allocate(step)  # needs the gradients: before zero_grad
        optimizer.zero_grad(set_to_none=True)
        timing.synchronize(device)
        seconds.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
        if step == 0:
            state_bytes = optimizer_state_bytes(optimizer)
    return {"losses": losses, "seconds": seconds, "optimizer_state_bytes": state_bytes}


@dataclass(frozen=True)
class Settings:
    """What every method shares (from the paper's Params)."""

    head_lr: float
    warmup_fraction: float
    weight_decay: float
    grad_clip: float
    dtype: str
    memory_interval_s: float
    latency_repeats: int
    latency_warmup: int


def run_method(name: str, lr: float, options: dict, base, train_set: Sequence[Batch], test_set: Sequence[Batch],
               latency_batch: Batch, settings: Settings, *, base_params: int, device: str, seed: int,
               progress=silent) -> dict:  # fmt: skip
    """Build, train, evaluate and time one method; one row of the results table."""
    method = check_name(name)
    row = {"method": name, "label": method.label, "group": method.group, "lr": lr, "status": "ok", "note": ""}
    _release_memory()
    torch.manual_seed(seed)  # the same initialisation of new parameters (LoRA's A, ...) in every run
    compute_dtype = torch.bfloat16 if settings.dtype == "bfloat16" else torch.float32
    steps = len(train_set)
    try:
        with metrics.MemorySampler(device, settings.memory_interval_s) as memory:
            model = build_model(name, options, base, total_steps=steps, device=device, compute_dtype=compute_dtype)
            torch.manual_seed(seed + 1)  # training's dropout stream, whatever building drew
            optimizer = make_optimizer(model, lr, settings.head_lr, settings.weight_decay, name)
            log = train(model, optimizer, train_set, schedule=warmup_linear(steps, settings.warmup_fraction),
                        grad_clip=settings.grad_clip, device=device, dtype=settings.dtype,
                        adalora=method.peft_config == "AdaLoraConfig", progress=progress, desc=name)  # fmt: skip
    except Unsupported as exc:
        row.update(status="unsupported", note=str(exc))
        return row

    counts = param_counts(model)
    model_bytes = metrics.tensor_bytes(model)
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    timed = log["seconds"][min(2, steps - 1) :]  # the first steps pay for allocation and kernel selection
    last_steps = log["losses"][-max(1, steps // 10) :]  # the final training loss: mean of the last 10% of steps
    row.update(
        counts,
        trainable_pct=100.0 * counts["trainable_params"] / base_params,
        method_pct=100.0 * counts["method_params"] / base_params,
        model_bytes=model_bytes,
        grad_bytes=grad_bytes,
        optimizer_state_bytes=log["optimizer_state_bytes"],
        train_state_bytes=model_bytes + grad_bytes + log["optimizer_state_bytes"],
        final_train_loss=float(np.mean(last_steps)),
        steps=steps,
        step_median_ms=1e3 * float(np.median(timed)),
        train_seconds=float(np.sum(log["seconds"])),
        mem_before_mb=memory.start_bytes / 2**20,
        peak_mem_mb=memory.peak_bytes / 2**20,
        mean_mem_mb=memory.avg_bytes / 2**20,
        peak_mem_growth_mb=(memory.peak_bytes - memory.start_bytes) / 2**20,
        mem_source=memory.peak_source,
    )
    del optimizer
    row["accuracy"] = accuracy(model, test_set, device, settings.dtype)

    # latency: the trained model as it trains (unmerged), then merged into plain weights
    lat = dict(repeats=settings.latency_repeats, warmup=settings.latency_warmup, device=device, dtype=settings.dtype)
    unmerged, base_u = latency_vs_base(model, base, latency_batch, **lat)
    row.update(latency_unmerged_ms=1e3 * unmerged, latency_base_ms=1e3 * base_u, latency_unmerged_ratio=unmerged / base_u)
    row.update(latency_merged_ms=math.nan, latency_merged_ratio=math.nan, merge_max_abs_diff=math.nan)
    if method.mergeable:
        with torch.no_grad(), _autocast(device, settings.dtype):
            before = model(**latency_batch.to(device).inputs).logits.float()
        model = model.merge_and_unload()
        with torch.no_grad(), _autocast(device, settings.dtype):
            after = model(**latency_batch.to(device).inputs).logits.float()
        merged, base_m = latency_vs_base(model, base, latency_batch, **lat)
        diff = float((after - before).abs().max())
        row.update(latency_merged_ms=1e3 * merged, latency_merged_ratio=merged / base_m, merge_max_abs_diff=diff)
        if diff > MERGE_CHECK_ATOL:
            row["note"] = f"merged logits differ by up to {diff:.3g}"
    elif method.peft_config is None:
        row["note"] = "a plain model: nothing to merge"
    elif method.quantized_base:
        row["note"] = "4-bit base: not merged (merging would re-quantize the weights)"
    else:
        row["note"] = "virtual tokens: nothing to merge into the weights"
    del model
    _release_memory()
    return row


def run_benchmark(p, base, tokenizer, train_df: pd.DataFrame, test_df: pd.DataFrame, *, device: str, seed: int,
                  progress=silent) -> pd.DataFrame:  # fmt: skip
    """Every method of ``p.run`` in order (``p``: the paper's Params); one row per method."""
    check_options({name: p.methods[name] for name in p.run})
    pad = tokenizer.pad_token_id
    train_ids = encode(tokenizer, train_df["summary"], p.max_length)
    test_ids = encode(tokenizer, test_df["summary"], p.max_length)
    train_set = train_batches(train_ids, train_df["label"], p.batch_size, p.epochs, pad, seed)
    test_set = eval_batches(test_ids, test_df["label"], p.eval_batch_size, pad)
    latency_rows = test_df.iloc[: p.latency_batch_size]  # one fixed batch, every row padded or cut to latency_seq_len
    latency_ids = encode(tokenizer, latency_rows["summary"], p.latency_seq_len)
    latency_batch = collate(latency_ids, latency_rows["label"], pad, length=p.latency_seq_len)
    settings = Settings(p.head_lr, p.warmup_fraction, p.weight_decay, p.grad_clip, p.dtype, p.memory_interval_s,
                        p.latency_repeats, p.latency_warmup)  # fmt: skip
    base_params = sum(t.numel() for t in base.parameters())
    rows = []
    for name in progress(p.run, desc="methods", total=len(p.run)):
        m = p.methods[name]
        rows.append(run_method(name, m.lr, m.options, base, train_set, test_set, latency_batch, settings,
                               base_params=base_params, device=device, seed=seed, progress=progress))  # fmt: skip
    return pd.DataFrame(rows)
