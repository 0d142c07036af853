"""Sweeps of tiny LMs over a grid (model size x token budget x parallel streams), as an artifact.

Scaling-law papers fit laws to a grid of trained models. Training is the slow part and the
fit is what one iterates on, so the grid is an artifact (shared.artifacts): its own DVC
stage, trained once per parameter set, read by the papers with ``run.artifact(name)``.
One module, several artifacts: each name in shared.artifacts.MODULES that points here has
its own config group (pipelines/conf/<name>/) and its own grid, e.g. ``scaling_grid``
(sizes x tokens, Chinchilla/Farseer fits) and ``parscale_grid`` (sizes x P streams).

Every run is one fresh model trained by shared.trainer from step 0 with the same recipe,
its own cosine schedule over its own token budget (Chinchilla's Approach 3 practice: a
truncated longer run is not a shorter run), on the corpus artifact's tokens in the same
order (``corpus.TokenBatches`` with the global seed: a shorter run sees a prefix of a longer
run's data), evaluated on the same fixed validation windows. ``streams`` > 1 wraps the model
with ParScale's P parallel streams (shared.parscale.wrap).

build() writes into the artifact folder:

    runs.csv           one row per run (the columns of ``RUN_COLUMNS``)
    <run>/summary.json the same row; its presence marks the run complete (builds resume per run)
    <run>/history.csv  the trainer's history
    <run>/model.pt     state_dict + spec (when save_weights): load_model() rebuilds the model

Read it with ``load_runs(folder)`` and ``load_model(folder, run)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.paths import write_text_atomic
from shared.tinylm import ModelName, TinySpec, model_spec
from shared.trainer import TrainConfig

ARTIFACT = "lmgrid"  # registered under several names in shared.artifacts.MODULES
REQUIRES: tuple[str, ...] = ("corpus",)
RUNS = "runs.csv"
SUMMARY = "summary.json"
WEIGHTS = "model.pt"
RUN_COLUMNS = [
    "run", "model", "streams", "tokens", "steps", "params", "nonembedding_params", "flops",
    "val_loss", "train_loss", "seconds", "tokens_per_second",
]


class GridTrain(BaseModel):
    """One training recipe for every run; a run's steps come from its token budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(gt=0, description="sequences per batch")
    seq_len: int = Field(gt=0, description="tokens per sequence")
    lr: float = Field(gt=0, description="peak AdamW learning rate")
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="share of a run's steps warming up linearly")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay to this fraction of lr at the last step")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay on matrices")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="max global gradient norm; 0: none")
    eval_batches: int = Field(8, gt=0, description="fixed validation windows (batch_size x seq_len each)")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="bfloat16: autocast (GPU)")

    def for_tokens(self, tokens: int) -> TrainConfig:
        steps = tokens // (self.batch_size * self.seq_len)
        return TrainConfig(
            steps=steps, batch_size=self.batch_size, seq_len=self.seq_len, lr=self.lr,
            warmup_steps=int(self.warmup_fraction * steps), schedule="cosine", min_lr_ratio=self.min_lr_ratio,
            weight_decay=self.weight_decay, beta1=self.beta1, beta2=self.beta2, grad_clip=self.grad_clip,
            eval_every=0, eval_batches=self.eval_batches, checkpoint_every=max(steps // 4, 1),
            log_every=max(min(steps // 10, 50), 1), dtype=self.dtype,
        )


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["cpu", "cuda", "auto"] = Field(description="where to train (cuda: required; auto: cuda if present)")
    num_threads: int = Field(ge=0, description="torch CPU threads; 0: every core")
    train: GridTrain = Field(description="the recipe shared by every run")
    models: dict[ModelName, TinySpec] = Field(min_length=1, description="name -> architecture (zoo.ModelSpec fields)")
    tokens: list[int] = Field(min_length=1, description="token budgets D; every model is trained once per budget")
    streams: list[int] = Field([1], min_length=1, description="ParScale parallel streams P per run (1: the plain model)")
    prefix_len: int = Field(0, ge=0, description="ParScale prefix tokens per layer and stream (needed when P > 1)")
    save_weights: bool = Field(True, description="keep every run's weights (model.pt) for later evaluation")

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        per_step = self.train.batch_size * self.train.seq_len
        for budget in self.tokens:
            if budget < per_step:
                raise ValueError(f"tokens: each budget must be >= batch_size x seq_len = {per_step}, got {budget}")
        if any(p < 1 for p in self.streams):
            raise ValueError(f"streams: each P must be >= 1, got {self.streams}")
        if any(p > 1 for p in self.streams) and self.prefix_len < 1:
            raise ValueError("prefix_len: must be >= 1 when streams has a P > 1")
        return self


def run_name(model: str, streams: int, tokens: int) -> str:
    return f"{model}-P{streams}-D{tokens}"


def build(params: Params, out: Path, inputs: dict[str, Path], seed: int, progress=None) -> dict[str, Any]:
    """Train every (model, streams, tokens) run not yet complete in ``out``; write runs.csv."""
    import pandas as pd

    from shared import corpus, device
    from shared.timing import pinned_threads

    if "corpus" not in inputs:
        raise ValueError("inputs: lmgrid needs the corpus artifact's folder as inputs['corpus']")
    out = Path(out)
    dev = device.resolve(params.device)
    recipe = params.train
    vocab, batches, val = corpus.training_data(inputs["corpus"], recipe.batch_size, recipe.seq_len,
                                               recipe.eval_batches, seed, dev)
    specs = {name: model_spec(entry, vocab, recipe.seq_len, name) for name, entry in params.models.items()}
    plan = [(name, p, d) for name in specs for p in params.streams for d in sorted(params.tokens)]

    rows = []
    with pinned_threads(params.num_threads or None):
        for name, p, d in plan:
            folder = out / run_name(name, p, d)
            if not (folder / SUMMARY).exists():
                _train_one(params, specs[name], name, p, d, folder, batches, val, dev, seed, progress)
            rows.append(json.loads((folder / SUMMARY).read_text()))
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    table.to_csv(out / RUNS, index=False)
    return {"runs": len(table), "device": dev, "vocab_size": vocab,
            "train_seconds": round(float(table["seconds"].sum()), 1)}


def _train_one(params: Params, spec, name: str, streams: int, tokens: int, folder: Path, batches, val, dev, seed,
               progress) -> None:
    import torch

    from shared import parscale, trainer, zoo

    cfg = params.train.for_tokens(tokens)
    model = parscale.wrap(zoo.build(spec, seed=seed), streams=streams, prefix_len=params.prefix_len, seed=seed)
    result = trainer.train(model, batches, cfg, device=dev, out_dir=folder, val_batches=val, progress=progress,
                           seed=seed, desc=f"{run_name(name, streams, tokens)}")
    result.history.to_csv(folder / "history.csv", index=False)
    counts = zoo.param_counts(spec)
    extra = parscale.extra_params_for(spec, streams, params.prefix_len)
    nonembedding = counts["non_embedding"] + extra  # ParScale counts its prefixes and aggregator in N
    tokens_seen = result.tokens_seen
    row = {
        "run": run_name(name, streams, tokens),
        "model": name,
        "streams": streams,
        "tokens": tokens_seen,
        "steps": cfg.steps,
        "params": counts["total"] + extra,
        "nonembedding_params": nonembedding,
        "flops": 6.0 * nonembedding * streams * tokens_seen,  # the 6ND estimate; P streams cost P passes
        "val_loss": result.final_val_loss,
        "train_loss": float(result.history["train_loss"].tail(max(1, cfg.steps // 10)).mean()),
        "seconds": round(result.train_seconds, 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
    }
    if params.save_weights:
        torch.save({"spec": spec.model_dump(), "streams": streams, "prefix_len": params.prefix_len,
                    "state_dict": model.state_dict()}, folder / WEIGHTS)
    (folder / trainer.CHECKPOINT).unlink(missing_ok=True)  # optimizer state: not part of the artifact
    write_text_atomic(folder / SUMMARY, json.dumps(row, indent=2, sort_keys=True) + "\n")  # last: marks the run complete


def load_runs(folder: str | Path):
    """The grid's runs.csv as a DataFrame (one row per run)."""
    import pandas as pd

    path = Path(folder) / RUNS
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; is {folder} an lmgrid artifact (scaling_grid, parscale_grid)?")
    return pd.read_csv(path)


def load_model(folder: str | Path, run: str, device: str = "cpu"):
    """The trained model of ``run`` (needs save_weights), in eval mode."""
    import torch

    from shared import parscale, zoo
    from shared.zoo import ModelSpec

    path = Path(folder) / run / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; unknown run or the grid was built with save_weights: false")
    saved = torch.load(path, map_location=device, weights_only=True)
    spec = ModelSpec.model_validate(saved["spec"])
    model = parscale.wrap(zoo.build(spec), streams=saved["streams"], prefix_len=saved["prefix_len"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()
