# %% [markdown]
# # 01 · EfficientLLM — fine-tuning: LoRA vs RSLoRA vs DoRA
# Fine-tunes the pretrained dense tinylm models of several sizes with peft's LoRA, RSLoRA
# (use_rslora: scaling alpha/sqrt(r) instead of alpha/r) and DoRA (use_dora: magnitude and
# direction) at a low and a high rank, with lora_alpha = 2r (LlamaFactory's default, the
# paper's trainer) and one learning rate for all. The data differ from pretraining: functions
# of the corpus's held-out (val) modules, written as docstring-then-code, split again by module
# into fine-tuning and eval parts. Measures the final eval loss, seconds per step, memory while
# training and trainable parameters. Feeds rslora-not-better-below-14b and dora-slowest-step.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"peft_ranks": [8]}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p01

# %%
from shared import notebook

run = notebook.start("01", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper01 import architectures, finetune
from shared import trainer
from shared.timing import pinned_threads

corpus_dir, tinylm_dir = run.artifact("corpus"), run.artifact("tinylm")
folders = architectures.model_dirs(tinylm_dir, p.peft_models)
data = finetune.finetune_data(corpus_dir, p.peft_eval_fraction)
sizes = {"train_tokens": len(data["train"]), "eval_tokens": len(data["eval"])} | {k: v for k, v in data.items() if k.endswith(("functions", "modules"))}
run.log_metrics({f"peft_data_{key}": int(value) for key, value in sizes.items()})
sizes

# %%
cfg = trainer.TrainConfig(
    steps=p.peft_steps, batch_size=p.peft_batch_size, seq_len=p.peft_seq_len, lr=p.peft_lr, warmup_steps=p.peft_warmup_steps,
    schedule="cosine", min_lr_ratio=0.1, weight_decay=0.0, grad_clip=1.0, eval_batches=p.peft_eval_batches,
    log_every=max(1, p.peft_steps // 10), dtype=p.peft_dtype,
)
with pinned_threads(p.num_threads if run.device == "cpu" else None):
    table = finetune.peft_table(
        folders, data, methods=p.peft_methods, ranks=p.peft_ranks, alpha_per_rank=p.peft_alpha_per_rank,
        target_modules=p.peft_target_modules, train_cfg=cfg, eval_batches=p.peft_eval_batches, device=run.device,
        interval_s=p.memory_interval_s, seed=run.seed, progress=run.progress,
    )
run.save_table(table, "peft")
table.drop(columns=["memory_source"])

# %%
metrics, timings = finetune.claim_metrics(table)
run.log_metrics({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()})
run.log_timings({k: round(v, 6) if isinstance(v, float) else v for k, v in timings.items()})
table.pivot_table(index=["model", "rank"], columns="method", values=["eval_loss", "step_s"]).round(4)
