"""The MoS comparison: LoRA of several ranks, pure sharing, MoS and its ablations, each
fine-tuning the same real pretrained model on the same low-data classification task.

Task: `shared.corpus.package_classification` (a docstring summary -> its top-level stdlib
package; whole modules held out), then only ``train_per_class`` training rows per class kept
(low data, so methods separate) while the test set stays whole. Per (method, seed): a deep copy
of the base model (its fresh head seeded by the seed), the method's adapters (LoRA through
peft; MoS through ``paper30.mos``, index matrices seeded by the seed), the same batches in the
same order for every method of a seed, AdamW with the head at ``head_lr`` and the adapter at
``lr``, linear warm-up then linear decay, gradient clipping; then test accuracy, the exact
trainable-parameter count, and for MoS the rank of every layer's A at initialisation and the
largest share of the public pool one layer's index matrix uses (below 1: a proper subset).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch

from paper30 import mos
from shared.progress import silent


# ------------------------------------------------------------------------------------- data


def low_data(train_df: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """At most ``per_class`` training rows of every label, drawn with the seed (order kept)."""
    rng = np.random.default_rng(seed)
    keep = []
    for _, rows in train_df.groupby("label", sort=True):
        keep.extend(rng.choice(rows.index.to_numpy(), size=min(per_class, len(rows)), replace=False))
    return train_df.loc[sorted(keep)].reset_index(drop=True)


def tensorize(tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int) -> dict[str, torch.Tensor]:
    """Every row tokenized once, padded to the longest: input_ids, attention_mask, labels."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(np.asarray(labels, dtype=np.int64))}


def batches(data: dict[str, torch.Tensor], batch_size: int, *, epochs: int = 1, seed: int | None = None):
    """Batches of rows (shuffled per epoch from (seed, epoch) when ``seed`` is given), each cut
    to its longest row."""
    n = len(data["labels"])
    for epoch in range(epochs):
        order = np.arange(n) if seed is None else np.random.default_rng([seed, epoch]).permutation(n)
        for start in range(0, n, batch_size):
            pick = torch.as_tensor(order[start : start + batch_size])
            width = int(data["attention_mask"][pick].sum(1).max())
            yield {k: (v[pick, :width] if v.ndim == 2 else v[pick]) for k, v in data.items()}


# ---------------------------------------------------------------------------------- methods


def load_base(p, num_labels: int, device: str):
    """The base classifier and its tokenizer: the real pretrained MiniLM, or a HF model (gpu)."""
    if p.model == "minilm":
        from shared import zoo

        return zoo.minilm(kind="sequence-classification", num_labels=num_labels, device=device)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(p.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(p.model, num_labels=num_labels, torch_dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def build(method, base, p, seed: int):
    """A deep copy of ``base`` with the method's adapter; the head (re-initialised from the
    seed, the same in every method of that seed) trains in every method."""
    model = copy.deepcopy(base)
    head = model.get_submodule(p.head)
    torch.manual_seed(seed)
    for module in head.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    if method.kind == "lora":
        import peft

        config = peft.LoraConfig(r=method.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=p.target_modules,
                                 modules_to_save=[p.head], task_type="SEQ_CLS")  # fmt: skip
        return peft.get_peft_model(model, config)
    cfg = mos.MoSConfig(target_modules=p.target_modules, budget_rank=p.budget_rank, r=method.r,
                        shards_per_vector=method.shards_per_vector, private_fraction=method.private_fraction,
                        subset_selection=method.subset_selection, pair_dissociation=method.pair_dissociation,
                        alpha=p.alpha, dropout=p.dropout, modules_to_save=(p.head,), seed=seed)  # fmt: skip
    return mos.inject(model, cfg)


def is_head(name: str, head: str) -> bool:
    return head in name.split(".")


def counts(model, head: str) -> dict[str, int]:
    """Trainable parameters (unique tensors) in all and without the head."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for _, p in trainable)
    in_head = sum(p.numel() for n, p in trainable if is_head(n, head))
    return {"trainable_params": total, "adapter_params": total - in_head}


def _autocast(device: str, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def fit(model, train: dict, p, seed: int, device: str) -> dict:
    """Train in place; the mean loss of the last tenth of the steps and the wall-clock."""
    params = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    groups = [{"params": [q for n, q in params if is_head(n, p.head)], "lr": p.head_lr},
              {"params": [q for n, q in params if not is_head(n, p.head)], "lr": p.lr}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, weight_decay=p.weight_decay)
    steps = p.epochs * -(-len(train["labels"]) // p.batch_size)
    warmup = int(round(p.warmup_fraction * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
    )
    torch.manual_seed(seed + 1)  # dropout stream
    model.train()
    losses, start = [], time.perf_counter()
    for batch in batches(train, p.batch_size, epochs=p.epochs, seed=seed):
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(device, p.dtype):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for _, q in params], p.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    tail = losses[-max(1, len(losses) // 10) :]
    return {"steps": len(losses), "final_train_loss": float(np.mean(tail)), "train_seconds": time.perf_counter() - start}


@torch.no_grad()
def accuracy(model, test: dict, p, device: str) -> float:
    model.eval()
    hits = 0
    for batch in batches(test, p.eval_batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(device, p.dtype):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        hits += int((logits.argmax(-1) == batch["labels"]).sum())
    return 100.0 * hits / len(test["labels"])


def run_one(name: str, method, base, train: dict, test: dict, p, seed: int, device: str) -> dict:
    model = build(method, base, p, seed)
    row = {"method": name, "kind": method.kind, "seed": seed, "r": method.r, **counts(model, p.head)}
    if method.kind == "mos":
        ranks = mos.factor_ranks(model)
        row.update(r=next(mos.mos_layers(model))[1].r, min_rank_a=min(ranks), mean_rank_a=float(np.mean(ranks)),
                   max_public_share=max(mos.public_shares(model)))  # fmt: skip
    row.update(fit(model, train, p, seed, device))
    row["accuracy"] = accuracy(model, test, p, device)
    return row


def run_grid(p, base, tokenizer, train_df, test_df, *, device: str, progress=silent) -> pd.DataFrame:
    """Every (method of ``p.run``, seed of ``p.seeds``): one row each."""
    train = tensorize(tokenizer, train_df["summary"], train_df["label"], p.max_length)
    test = tensorize(tokenizer, test_df["summary"], test_df["label"], p.max_length)
    jobs = [(name, seed) for seed in p.seeds for name in p.run]
    rows = [run_one(name, p.methods[name], base, train, test, p, seed, device) for name, seed in progress(jobs, desc="runs", total=len(jobs))]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- summary


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean and std of accuracy over seeds, the (seed-independent) parameter count."""
    out = table.groupby("method", sort=False).agg(
        kind=("kind", "first"), r=("r", "first"), adapter_params=("adapter_params", "first"),
        trainable_params=("trainable_params", "first"), accuracy=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"), seeds=("seed", "nunique"),
    )  # fmt: skip
    return out.reset_index()


ABLATIONS = {  # metric suffix -> the ablated method's name in the config
    "subset": "mos_no_subset",
    "dissociation": "mos_no_dissociation",
    "sharding": "mos_no_sharding",
    "privatization": "mos_no_privatization",
}


CLAIM_KEYS = ["mos_params_over_lora_budget", "mos_minus_lora_1x", "mos_minus_lora_4x", "mos_minus_lora_8x",
              "mos_param_savings", "pure_param_savings", "pure_minus_lora_1x", "pure_params_over_lora_budget",
              "mos_minus_pure", *(f"drop_no_{suffix}" for suffix in ABLATIONS)]  # fmt: skip


def param_savings(summary: pd.DataFrame, method: str, budget_rank: int, tolerance: float = 0.5) -> float | None:
    """Parameter savings of ``method`` against LoRA: the adapter parameters of the largest LoRA
    rank k such that ``method`` is within ``tolerance`` points of every LoRA rank up to k (ranks
    in increasing order; the first one it trails by more ends the walk), over the method's own.
    None unless LoRA at 4x the budget ran (a smoke run); 0.0 when even the smallest rank is
    out of reach."""
    acc = dict(zip(summary["method"], summary["accuracy"]))
    if method not in acc or f"lora_r{4 * budget_rank}" not in acc:
        return None
    loras = summary[summary["kind"] == "lora"].sort_values("adapter_params")
    matched = 0
    for lora_acc, lora_params in zip(loras["accuracy"], loras["adapter_params"]):
        if lora_acc > acc[method] + tolerance:
            break
        matched = lora_params
    own = summary.loc[summary["method"] == method, "adapter_params"].iloc[0]
    return round(float(matched / own), 3)


def claim_metrics(summary: pd.DataFrame, budget_rank: int) -> dict:
    """The numbers the claims check; one whose methods did not run (a smoke run) is None, which
    the ledger reports as "not run"."""
    acc = dict(zip(summary["method"], summary["accuracy"]))
    params = dict(zip(summary["method"], summary["adapter_params"]))
    out = {f"acc_{m}": round(float(a), 3) for m, a in acc.items()}
    out.update(dict.fromkeys(CLAIM_KEYS))
    out.update({f"params_{m}": int(n) for m, n in params.items()})
    lora = f"lora_r{budget_rank}"
    for k in (4, 8):
        other = f"lora_r{budget_rank * k}"
        if "mos" in acc and other in acc:
            out[f"mos_minus_lora_{k}x"] = round(float(acc["mos"] - acc[other]), 3)
    if "mos" in acc and lora in acc:
        out["mos_minus_lora_1x"] = round(float(acc["mos"] - acc[lora]), 3)
        out["mos_params_over_lora_budget"] = round(params["mos"] / params[lora], 6)
    out["mos_param_savings"] = param_savings(summary, "mos", budget_rank)
    out["pure_param_savings"] = param_savings(summary, "pure_sharing", budget_rank)
    if "pure_sharing" in acc and lora in acc:
        out["pure_minus_lora_1x"] = round(float(acc["pure_sharing"] - acc[lora]), 3)
        out["pure_params_over_lora_budget"] = round(params["pure_sharing"] / params[lora], 6)
    if "pure_sharing" in acc and "mos" in acc:
        out["mos_minus_pure"] = round(float(acc["mos"] - acc["pure_sharing"]), 3)
    for suffix, name in ABLATIONS.items():
        if "mos" in acc and name in acc:
            out[f"drop_no_{suffix}"] = round(float(acc["mos"] - acc[name]), 3)
    return out
