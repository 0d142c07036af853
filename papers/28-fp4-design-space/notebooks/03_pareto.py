# %% [markdown]
# # 28 · FP4 design space — overhead of each technique and the Pareto front
# Counts the extra operations of every technique over plain MXFP4 per training step (tensor
# scaling, FP8 scales, the O(B log B) block Hadamard, random numbers for SR; `paper28.overhead`)
# as a share of the step's GEMM FLOPs, and plots the loss gap to FP32 against it with the
# Pareto front. Feeds the training claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"rng_ops": 4.0}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p28

# %%
from shared import notebook

run = notebook.start("28", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd
import torch

from paper28 import overhead, techniques

torch.set_num_threads(p.num_threads)
gaps, shapes = run.load_table("training_runs"), run.load_table("gemm_shapes")
names = [n for n in p.config_names() if n != techniques.BASELINE]
fronts, metrics = [], {}
for task in p.tasks:
    gemms = shapes.loc[shapes["task"] == task, ["M", "K", "N"]].itertuples(index=False, name=None)
    over = overhead.overhead_table(names, list(gemms), p.block, p.rng_ops)
    g = gaps[gaps["task"] == task]
    front = overhead.pareto(g, over).assign(task=task)
    fronts.append(front)
    metrics.update(overhead.claim_metrics(g, front, task, p.hadamard))
front = pd.concat(fronts, ignore_index=True)
run.save_table(front, "pareto")
run.log_metrics(metrics)
metrics

# %%
import matplotlib.pyplot as plt
import seaborn as sns

front["scale"] = front["config"].str.split("-").str[0]
front["rounding"] = front["config"].str.split("-").str[-1]
fig, axes = plt.subplots(1, len(p.tasks), figsize=(4.6 * len(p.tasks), 4))
axes = [axes] if len(p.tasks) == 1 else axes
for ax, task in zip(axes, p.tasks):
    d = front[front["task"] == task].sort_values("overhead")
    sns.scatterplot(data=d, x="overhead", y="loss_gap", hue="scale", style="rounding", s=60, ax=ax, legend=ax is axes[-1])
    f = d[d["pareto"]]
    ax.step(f["overhead"], f["loss_gap"], where="post", color="0.4", lw=1, zorder=0)
    for r in d.itertuples():
        if r.pareto or r.config in (techniques.PLAIN, techniques.Technique("e4m3", p.hadamard, True, True).name):
            ax.annotate(r.config, (r.overhead, r.loss_gap), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="overhead (extra ops / GEMM FLOPs)", ylabel="loss gap to FP32", title=task)
    ax.set_yscale("symlog", linthresh=1e-3)
fig.tight_layout()
run.save_figure(fig, "fig2_pareto")
