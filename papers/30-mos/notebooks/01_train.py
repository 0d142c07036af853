# %% [markdown]
# # 30 · MoS — LoRA, pure sharing and Mixture of Shards on one low-data task
# Fine-tunes the real pretrained all-MiniLM-L6-v2 to tell which top-level standard-library
# package a docstring summary comes from, with only a few training rows per class. Every
# method adapts the same linears (q, k, v, attention output, FFN in and out of all 6 layers):
# LoRA at several ranks (peft), pure sharing (one A/B per layer type for all layers) and MoS at
# the budget B of LoRA r = 2 with effective rank 6, and MoS with each differentiation strategy
# removed (`paper30.mos`, `paper30.bench`). Same batches, order and schedule for every method of
# a seed; accuracy averaged over seeds. Feeds every claim of claims.yaml.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"epochs": 4}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p30

# %%
from shared import notebook

run = notebook.start("30", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %% [markdown]
# The task: the corpus artifact's docstrings, the `n_classes` packages with the most of them,
# split by module (no module in both splits), then `train_per_class` training rows per class.

# %%
import torch

from paper30 import bench
from shared import corpus

torch.set_num_threads(p.num_threads)
docstrings = corpus.load_docstrings(run.artifact("corpus"))
train_df, test_df, label_names = corpus.package_classification(
    docstrings, p.n_classes, p.max_per_class, seed=run.seed, test_fraction=p.test_fraction
)
train_df = bench.low_data(train_df, p.train_per_class, seed=run.seed)
print(f"{len(train_df)} train / {len(test_df)} test summaries; classes: {', '.join(label_names)}")

# %% [markdown]
# Every (method, seed). The base model is loaded once and deep-copied per run; the head is
# re-initialised from the run's seed, so every method of a seed starts from the same head.

# %%
torch.manual_seed(run.seed)
base, tokenizer = bench.load_base(p, len(label_names), run.device)
runs = bench.run_grid(p, base, tokenizer, train_df, test_df, device=run.device, progress=run.progress)
summary = bench.summarize(runs)
run.save_table(runs.drop(columns=["train_seconds"]), "runs")
run.save_table(summary, "summary")
summary.round(3)

# %% [markdown]
# Numbers for the ledger: mean accuracy per method, exact adapter-parameter counts, MoS against
# LoRA at 1x, 4x and 8x its budget, the parameter savings of MoS and of pure sharing (the largest
# LoRA rank they match together with every smaller one), pure sharing against LoRA at its budget,
# the accuracy each ablation costs MoS (means over seeds), and per MoS method the minimum rank of
# A and the largest share of the public pool one layer uses (subset selection: below 1).
# Training seconds go to timings.json.

# %%
metrics = {"n_train": len(train_df), "n_test": len(test_df), "n_classes": len(label_names), "n_seeds": len(p.seeds)}
metrics.update(bench.claim_metrics(summary, p.budget_rank))
metrics.update(min_rank_a_mos=None, max_public_share_mos=None)  # the structural claims' metrics, "not run" without MoS
if "min_rank_a" in runs:
    mos_runs = runs.dropna(subset=["min_rank_a"]).groupby("method")
    metrics.update({f"min_rank_a_{m}": int(v) for m, v in mos_runs["min_rank_a"].min().items()})
    metrics.update({f"max_public_share_{m}": round(float(v), 4) for m, v in mos_runs["max_public_share"].max().items()})
run.log_metrics(metrics)
seconds = runs.groupby("method")["train_seconds"].mean()
run.log_timings({f"train_seconds_{m}": round(float(s), 3) for m, s in seconds.items()})
metrics
