# %% [markdown]
# # 16 · PEFT survey — every method on one real fine-tuning task
# Fine-tunes the real pretrained all-MiniLM-L6-v2 (22.7 M parameters) to tell which top-level
# standard-library package a docstring summary comes from, once per method of the survey's
# taxonomy that peft implements (plus full fine-tuning, a linear probe and BitFit), with the
# same data, order, seed, schedule and head learning rate for all. Per method it measures the
# trainable parameters, the optimizer state, the training-state bytes, peak and mean memory,
# the training-step time, inference latency before and after merging the update into the
# weights, and test accuracy (`paper16.peft_bench`). Feeds every claim of claims.yaml: exact
# counts and accuracy go to metrics.json, wall-clock and memory measurements to timings.json.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"epochs": 2}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p16

# %%
from shared import notebook

run = notebook.start("16", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %% [markdown]
# The task: the corpus artifact's docstrings (summary = first sentence), the `n_classes`
# packages with the most of them, balanced, split by module (no module in both splits).

# %%
import torch

from paper16 import peft_bench
from shared import corpus, zoo

torch.set_num_threads(p.num_threads)
docstrings = corpus.load_docstrings(run.artifact("corpus"))
train_df, test_df, label_names = corpus.package_classification(
    docstrings, p.n_classes, p.max_per_class, seed=run.seed, test_fraction=p.test_fraction
)
print(f"{len(train_df)} train / {len(test_df)} test summaries; classes: {', '.join(label_names)}")
train_df[["package", "summary"]].head()

# %% [markdown]
# Every method in `p.run`, in order. The base model is loaded once (seeded, so its fresh
# head is the same in every run) and deep-copied for each method; it also serves as the
# reference for the latency ratios.

# %%
torch.manual_seed(run.seed)
base, tokenizer = zoo.minilm(kind="sequence-classification", num_labels=len(label_names), device=run.device)
table = peft_bench.run_benchmark(p, base, tokenizer, train_df, test_df, device=run.device, seed=run.seed, progress=run.progress)
run.save_table(table, "methods")
shown = ["method", "group", "status", "trainable_params", "trainable_pct", "optimizer_state_bytes", "accuracy",
         "step_median_ms", "peak_mem_growth_mb", "latency_unmerged_ratio", "latency_merged_ratio", "note"]  # fmt: skip
table[shown]

# %% [markdown]
# Numbers for the ledger. Exact counts and test accuracy are deterministic (metrics.json);
# times and memory are measurements (timings.json). Ratios compare a method with full
# fine-tuning, and latencies with the base model timed in the same interleaved rounds.

# %%
import math

from paper16.methods import REGISTRY

ok = table[table["status"] == "ok"].set_index("method")
metrics = {"n_train": len(train_df), "n_test": len(test_df), "n_classes": len(label_names)}
for name, row in ok.iterrows():
    metrics[f"acc_{name}"] = round(row["accuracy"], 3)
    metrics[f"trainable_params_{name}"] = int(row["trainable_params"])
    metrics[f"trainable_pct_{name}"] = round(row["trainable_pct"], 5)
    metrics[f"method_pct_{name}"] = round(row["method_pct"], 5)
    metrics[f"optimizer_state_bytes_{name}"] = int(row["optimizer_state_bytes"])
    metrics[f"train_state_bytes_{name}"] = int(row["train_state_bytes"])
full, lora = ok.loc["full"], ok.loc["lora"]
metrics["opt_state_ratio_lora_full"] = round(lora["optimizer_state_bytes"] / full["optimizer_state_bytes"], 6)
metrics["train_state_ratio_lora_full"] = round(lora["train_state_bytes"] / full["train_state_bytes"], 4)
metrics["lora_param_reduction"] = round(full["trainable_params"] / lora["trainable_params"], 2)
metrics["acc_gap_lora_minus_full"] = round(lora["accuracy"] - full["accuracy"], 3)
run.log_metrics(metrics)

timings = {}
for name, row in ok.iterrows():
    timings[f"step_ms_{name}"] = row["step_median_ms"]
    timings[f"peak_mem_growth_mb_{name}"] = row["peak_mem_growth_mb"]
    timings[f"latency_unmerged_ratio_{name}"] = row["latency_unmerged_ratio"]
    if not math.isnan(row["latency_merged_ratio"]):
        timings[f"latency_merged_ratio_{name}"] = row["latency_merged_ratio"]
# the reparameterized methods merged into full-precision weights (QLoRA's merge stays 4-bit)
reparameterized = [n for n in ok.index if REGISTRY[n].group == "reparameterized" and not REGISTRY[n].quantized_base]
timings["latency_merged_ratio_reparam_max"] = ok.loc[reparameterized, "latency_merged_ratio"].max()
timings["latency_prompt_over_lora_merged"] = ok.loc["prompt_tuning", "latency_unmerged_ratio"] / lora["latency_merged_ratio"]
timings["peak_mem_growth_ratio_lora_full"] = lora["peak_mem_growth_mb"] / full["peak_mem_growth_mb"]
timings["step_time_ratio_lora_full"] = lora["step_median_ms"] / full["step_median_ms"]
run.log_timings({key: round(float(value), 4) for key, value in timings.items()})
{k: v for k, v in {**metrics, **timings}.items() if "ratio" in k or "gap" in k or "over" in k}
