"""The "tinylm" artifact: a family of small causal LMs pretrained on the same corpus tokens.

Every model named in ``models`` (a shared.zoo.ModelSpec each: mha, gqa, mqa, mla, nsa
attention, dense or MoE feed-forward, several sizes) is trained by shared.trainer with
the same ``train`` config on the SAME batches in the same order: batch ``i`` is
``corpus.TokenBatches(train tokens, seed)[i]`` for every model, so the models differ only in
their architecture (and initial weights, drawn from the same seed). They are evaluated on the
same fixed validation windows (``corpus.eval_batches``, ``train.eval_batches`` of them).

Two fields of a spec come from the data unless given:

- ``vocab_size``: 0 (or absent) means the corpus tokenizer's vocabulary, the usual case (a
  spec cannot know it before the corpus is built); a larger value pads the embedding (e.g. to
  a multiple of 64 for GPU matmuls); a smaller one is an error;
- ``max_seq_len``: 0 (or absent) means ``train.seq_len``.

build() writes, into the artifact folder, per model ``<name>/``:

    spec.json, config.json, model.safetensors   shared.zoo.save (load with shared.zoo.load)
    history.csv                                  step, lr, train_loss, grad_norm, val_loss, tokens, seconds
    summary.json                                 params, tokens, final val loss, train seconds, ...

and returns {"vocab_size", "device", "models": {name: summary}}. A model folder with a
summary.json is complete. The build is resumable (the artifact's staging folder survives a
failure): complete models are skipped, and an interrupted one continues from
``<name>/checkpoint.pt`` (written every ``train.checkpoint_every`` steps), giving the same
weights as an uninterrupted run. The checkpoint (optimizer state: 2x the weights) is deleted
once the model is saved, so the finished artifact holds only weights and tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.paths import write_text_atomic
from shared.trainer import CHECKPOINT, TrainConfig
from shared.zoo import ModelSpec

ARTIFACT = "tinylm"
REQUIRES: tuple[str, ...] = ("corpus",)
SUMMARY = "summary.json"  # written last: its presence marks a model as complete
HISTORY = "history.csv"

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]  # a folder name


class TinySpec(ModelSpec):
    """A zoo.ModelSpec whose vocabulary and context may be left to the corpus and train config."""

    vocab_size: int = Field(0, ge=0, description="0: the corpus tokenizer's vocabulary; else >= it (padded rows)")
    max_seq_len: int = Field(0, ge=0, description="0: train.seq_len")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cpu", "cuda", "auto"] = Field(description="where to train (cuda: required; auto: cuda if present)")
    num_threads: int = Field(ge=0, description="torch CPU threads while training; 0: torch's default (every core)")
    train: TrainConfig = Field(description="one training config for every model (shared.trainer.TrainConfig)")
    models: dict[ModelName, TinySpec] = Field(min_length=1, description="name -> architecture (zoo.ModelSpec fields)")

    @model_validator(mode="after")
    def _context_fits(self) -> Params:
        for name, spec in self.models.items():
            if spec.max_seq_len and spec.max_seq_len < self.train.seq_len:
                limit = f"train.seq_len={self.train.seq_len}"
                raise ValueError(f"models.{name}.max_seq_len: must be >= {limit} (or 0), got {spec.max_seq_len}")
        return self


def model_spec(entry: TinySpec, vocab_size: int, seq_len: int, name: str = "?") -> ModelSpec:
    """The full zoo.ModelSpec of a params entry, given the corpus vocabulary and train.seq_len."""
    if entry.vocab_size and entry.vocab_size < vocab_size:
        raise ValueError(
            f"tinylm.models.{name}.vocab_size: must be >= the corpus vocabulary {vocab_size} (or 0), "
            f"got {entry.vocab_size}"
        )
    fields = entry.model_dump(exclude_unset=True) | {
        "vocab_size": entry.vocab_size or vocab_size,
        "max_seq_len": entry.max_seq_len or seq_len,
    }
    return ModelSpec.model_validate(fields)


def build(params: Params, out: Path, inputs: dict[str, Path], seed: int, progress=None) -> dict[str, Any]:
    """Train every model of ``params.models`` into ``out/<name>/``; see the module docstring."""
    from shared import corpus, device
    from shared.timing import pinned_threads

    if "corpus" not in inputs:
        raise ValueError("inputs: tinylm needs the corpus artifact's folder as inputs['corpus']")
    out = Path(out)
    dev = device.resolve(params.device)
    cfg = params.train
    # one batch order for all models
    vocab, batches, val = corpus.training_data(inputs["corpus"], cfg.batch_size, cfg.seq_len, cfg.eval_batches, seed, dev)
    specs = {name: model_spec(entry, vocab, cfg.seq_len, name) for name, entry in params.models.items()}  # fail early

    summaries = {}
    with pinned_threads(params.num_threads or None):
        for name, spec in specs.items():
            folder = out / name
            if not (folder / SUMMARY).exists():  # else: finished by an earlier attempt
                _train_one(name, spec, folder, cfg, batches, val, dev, seed, progress)
            (folder / CHECKPOINT).unlink(missing_ok=True)  # the optimizer state is not part of the artifact
            summaries[name] = json.loads((folder / SUMMARY).read_text())
    return {"vocab_size": vocab, "device": dev, "models": summaries}


def _train_one(name: str, spec: ModelSpec, folder: Path, cfg: TrainConfig, batches, val, dev: str, seed: int, progress):
    """Train one model (resuming from folder/checkpoint.pt if there is one) and save it into folder."""
    import torch

    from shared import trainer, zoo

    model = zoo.build(spec, seed=seed)
    result = trainer.train(model, batches, cfg, device=dev, out_dir=folder, val_batches=val,
                           progress=progress, seed=seed, desc=f"tinylm {name}")
    zoo.save(model, spec, folder)  # quiet: zoo.save hides transformers' per-shard bars
    result.history.to_csv(folder / HISTORY, index=False)
    counts = zoo.param_counts(spec)
    summary = {
        "params": sum(p.numel() for p in model.parameters()),
        "active_params": counts["active"],
        "embedding_params": counts["embedding"],
        "tokens": result.tokens_seen,
        "steps": cfg.steps,
        "final_val_loss": result.final_val_loss,
        "final_val_perplexity": math.exp(result.final_val_loss),
        "final_train_loss": float(result.history["train_loss"].tail(max(1, cfg.steps // 10)).mean()),
        "eval_dtype": cfg.dtype,  # trainer.evaluate(..., dtype=eval_dtype) reproduces final_val_loss
        "train_seconds": round(result.train_seconds, 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "device": dev,
    }
    write_text_atomic(folder / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")  # last: marks it complete
    if dev == "cuda":
        del model
        torch.cuda.empty_cache()
