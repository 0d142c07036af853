"""EfficientLLM axis 2, fine-tuning: LoRA vs RSLoRA vs DoRA (peft) on pretrained tinylm models.

The three methods differ in one line of ``peft.LoraConfig``:

    LoRA    W x + (alpha / r)       B A x                      (Hu et al. 2021)
    RSLoRA  W x + (alpha / sqrt r)  B A x   use_rslora=True    (Kalajdzievski 2023)
    DoRA    m * (W + s B A) / ||W + s B A||_c  x   use_dora=True  (Liu et al. 2024): a learned
            magnitude per output column times the normalised direction; the column norm of
            W + s B A is recomputed every forward, which is what makes it slower.

As in the paper's trainer (LlamaFactory), lora_alpha = 2 r by default
(``alpha_per_rank``), dropout 0, adapters on every linear layer of the decoder, one learning
rate for every method.

The fine-tuning data must differ from pretraining. We use the docstring dataset of the corpus
artifact restricted to the modules of its *val* split, files the tinylm models never saw,
in a format they never saw either: each function as ``\"\"\"<first docstring sentence>\"\"\"``
followed by its code without the docstring (docstring-conditioned code generation), the
functions separated by the tokenizer's end-of-text token. The held-out modules are split
again by module (a hash of the name) into fine-tuning train and eval parts, so the eval
loss is measured on functions of modules not fine-tuned on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from shared import corpus, metrics, trainer, zoo
from shared.progress import silent

TEXT_TEMPLATE = '"""{summary}"""\n{code}\n'
EOT = "<|endoftext|>"
METHOD_FLAGS = {"lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True}}


# --------------------------------------------------------------------------------- data
def split_by_module(df: pd.DataFrame, eval_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) rows, no module on both sides: in the order of a hash of their name,
    each module goes to eval if eval still stays within ``eval_fraction`` of the rows
    (modules differ a lot in size); if none fits, the smallest one. At least one stays in train."""
    sizes = df.groupby("module").size()
    modules = sorted(sizes.index, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    if len(modules) < 2:
        raise ValueError(f"fine-tuning data: need functions from >= 2 modules to split by module, got {len(modules)}")
    target, held, n_held = eval_fraction * len(df), set(), 0
    for module in modules[:-1]:  # the last one stays in train whatever happens
        if n_held + sizes[module] <= target:
            held.add(module)
            n_held += sizes[module]
    if not held:
        held.add(min(modules, key=lambda name: (sizes[name], name)))
    is_eval = df["module"].isin(held)
    return df[~is_eval].reset_index(drop=True), df[is_eval].reset_index(drop=True)


def encode_functions(df: pd.DataFrame, tokenizer) -> np.ndarray:
    """One uint16 token stream: each function in TEXT_TEMPLATE, EOT between functions."""
    eot = tokenizer.token_to_id(EOT)
    if eot is None:
        raise ValueError(f"tokenizer: has no {EOT!r} token")
    texts = [TEXT_TEMPLATE.format(summary=row.summary.strip(), code=row.code) for row in df.itertuples()]
    ids: list[int] = []
    for enc in tokenizer.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=np.uint16)


def finetune_data(corpus_dir: str | Path, eval_fraction: float) -> dict:
    """Token streams of the fine-tuning split (held-out modules, docstring-conditioned code)."""
    df = corpus.load_docstrings(corpus_dir)
    held_out = df[df["split"] == "val"]
    train_df, eval_df = split_by_module(held_out, eval_fraction)
    tokenizer = corpus.load_tokenizer(corpus_dir)
    return {
        "train": encode_functions(train_df, tokenizer),
        "eval": encode_functions(eval_df, tokenizer),
        "train_functions": len(train_df),
        "eval_functions": len(eval_df),
        "train_modules": train_df["module"].nunique(),
        "eval_modules": eval_df["module"].nunique(),
    }


# ---------------------------------------------------------------------------------- peft
def lora_config(method: str, rank: int, alpha_per_rank: float, target_modules: Sequence[str]):
    from peft import LoraConfig

    if method not in METHOD_FLAGS:
        raise ValueError(f"method: {method!r} is not an option; allowed: {', '.join(METHOD_FLAGS)}")
    return LoraConfig(
        r=rank,
        lora_alpha=alpha_per_rank * rank,
        lora_dropout=0.0,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        **METHOD_FLAGS[method],
    )


def with_adapters(model, method: str, rank: int, alpha_per_rank: float, target_modules: Sequence[str], seed: int = 0):
    """The model wrapped by peft with fresh adapters (A random from ``seed``, B = 0)."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, lora_config(method, rank, alpha_per_rank, target_modules))


def adapter_scalings(peft_model) -> set[float]:
    """The distinct scaling factors of the adapter layers (alpha/r for LoRA, alpha/sqrt(r) for RSLoRA)."""
    from peft.tuners.lora import LoraLayer

    return {float(m.scaling["default"]) for m in peft_model.modules() if isinstance(m, LoraLayer)}


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ the runs
def peft_table(
    folders: dict[str, Path],
    data: dict,
    *,
    methods: Sequence[str],
    ranks: Sequence[int],
    alpha_per_rank: float,
    target_modules: Sequence[str],
    train_cfg: trainer.TrainConfig,
    eval_batches: int,
    device: str,
    interval_s: float,
    seed: int,
    progress: Callable | None = None,
) -> pd.DataFrame:
    """One row per (model, method, rank) plus one "none" row per model (before fine-tuning):
    final held-out loss, seconds per step, peak and time-averaged memory growth while
    training, trainable parameters, samples per second."""
    train_batches = corpus.TokenBatches(data["train"], train_cfg.batch_size, train_cfg.seq_len, seed=seed, device=device)
    val = corpus.eval_batches(data["eval"], train_cfg.batch_size, train_cfg.seq_len, eval_batches, device=device)
    runs = [(name, method, rank) for name in folders for rank in ranks for method in methods]
    rows = []
    for name in folders:
        model, spec = zoo.load(folders[name], device=device)
        rows.append(
            {"model": name, "params_total": zoo.param_counts(spec)["total"], "method": "none", "rank": 0,
             "eval_loss": trainer.evaluate(model, val, device), "trainable_params": 0}  # fmt: skip
        )
        del model
    for name, method, rank in (progress or silent)(runs, desc="peft runs", total=len(runs)):
        base, spec = zoo.load(folders[name], device=device)
        model = with_adapters(base, method, rank, alpha_per_rank, target_modules, seed=seed)
        with metrics.MemorySampler(device, interval_s) as memory:
            result = trainer.train(model, train_batches.__getitem__, train_cfg, device=device, val_batches=val, seed=seed,
                                   progress=silent)  # fmt: skip
        step_s = result.train_seconds / train_cfg.steps
        rows.append(
            {
                "model": name,
                "params_total": zoo.param_counts(spec)["total"],
                "method": method,
                "rank": rank,
                "alpha": alpha_per_rank * rank,
                "scaling": sorted(adapter_scalings(model))[0],
                "eval_loss": result.final_val_loss,
                "train_loss_last": float(result.history["train_loss"].iloc[-1]),
                "trainable_params": trainable_parameters(model),
                "step_s": step_s,
                "samples_per_s": train_cfg.batch_size / step_s,
                "peak_growth_bytes": memory.peak_bytes - memory.start_bytes,
                "amu_growth_bytes": memory.avg_bytes - memory.start_bytes,
                "memory_source": memory.peak_source,
            }
        )
        del model, base
    return pd.DataFrame(rows)


def claim_metrics(table: pd.DataFrame) -> tuple[dict, dict]:
    """(metrics, timings) of claims.yaml from the PEFT table."""
    runs = table[table["method"] != "none"]
    loss = runs.pivot_table(index=["model", "rank"], columns="method", values="eval_loss")
    m: dict[str, float | int] = {"rslora_wins_fraction": float((loss["rslora"] < loss["lora"]).mean())}
    for row in table.itertuples():
        m[f"peft_loss_{row.model}_{row.method}_r{row.rank}"] = row.eval_loss
    largest = runs.loc[runs["params_total"].idxmax(), "model"]
    top = runs[(runs["model"] == largest) & (runs["rank"] == runs["rank"].max())].set_index("method")["step_s"]
    t: dict[str, float] = {"dora_step_time_over_slowest_other": float(top["dora"] / top.drop("dora").max())}
    for row in runs.itertuples():
        t[f"step_ms_{row.model}_{row.method}_r{row.rank}"] = 1e3 * row.step_s
    return m, t
