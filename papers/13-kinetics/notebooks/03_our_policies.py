# %% [markdown]
# # 13 · Kinetics — on our policies: accuracy vs cost, FLOPs only vs FLOPs + I x KV bytes
# The shared reasoning policies (several sizes, trained once by the pipeline: artifact `reasoning`)
# sample N answers per problem (majority vote, or best-of-N with the verifier); the substrate counts
# FLOPs and KV-cache bytes read per generated token. For each accuracy target we pick the cheapest
# (policy, N) under FLOPs only and under eFLOPs = FLOPs + I x bytes, as notebook 01 does for Qwen3.
# Feeds the claims ours-best-size-*.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"ours_problems": 32}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p13

# %%
from shared import notebook

run = notebook.start("13", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import torch

from paper13 import ours
from shared import reasoning

torch.set_num_threads(p.num_threads)
folder = run.artifact("reasoning")
policies = reasoning.load_policies(folder, device=run.device)
verifier = reasoning.load_prm(folder, device=run.device) if p.ours_method == "best_of_n" else None
task = reasoning.load_task(folder)
problems = task.generate(p.ours_problems, p.ours_difficulty, seed=run.seed + 13)
table = ours.evaluate(
    reasoning, policies, problems, p.ours_n, method=p.ours_method, verifier=verifier,
    max_new_tokens=p.ours_max_new_tokens, temperature=p.ours_temperature, seed=run.seed,
    intensity=p.intensity, progress=run.progress,
)  # fmt: skip
run.save_table(table, "ours_configs")
picks, summary = ours.compare(table, p.ours_targets)
run.save_table(picks, "ours_picks")
run.log_metrics({f"ours_{k}": v for k, v in summary.items() if k in ("eflops_not_smaller_share", "eflops_larger_count", "max_excess")}
                | {"ours_kv_eflops_share": round(float((p.intensity * table["kv_bytes"] / table["eflops"]).mean()), 4),
                   "ours_best_accuracy": float(table["coverage"].max())})  # fmt: skip
table

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, col in zip(axes, ("flops", "eflops")):
    for name, g in table.groupby("model", sort=False):
        ax.plot(g[col], g["coverage"], "o-", label=f"{name} ({g['params_b'].iloc[0] * 1e3:.2f}M params)")
    ax.set(xscale="log", xlabel=f"{col} per problem" + (f" (FLOPs + {p.intensity:g} x KV bytes)" if col == "eflops" else ""),
           ylabel=f"{p.ours_method} accuracy (N = {', '.join(map(str, p.ours_n))})")
axes[0].legend()
fig.tight_layout()
run.save_figure(fig, "fig4_our_policies")
