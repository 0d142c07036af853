# %% [markdown]
# # 13 · Kinetics — the eFLOPs cost model on Qwen3, and which model size is cheapest
# Test-time cost = compute + I x memory access (I = 562.5 FLOPs/byte, B200). We (1) recompute 48
# rows of the authors' published cost tables from the Qwen3 configs (dense 0.6B, block top-k 8B),
# (2) split the cost into parameter compute, attention compute and KV memory, and (3) with the
# LiteSys pass@1 of Qwen3 0.6B-32B and a Beta model of per-problem solve rates, pick for each
# coverage target the cheapest (model, N samples) under FLOPs only and under eFLOPs.
# Feeds the claims cost-model-*, memory-dominates-06b, attention-dominates-cost, best-size-*,
# kinetics-threshold, compute-optimal-up-to-3x, direction-robust-to-coverage-model, blocktopk-lowers-cost,
# sparse-gain-* (not run offline).

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"coverage_kappa": 2.0}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p13

# %%
from shared import notebook

run = notebook.start("13", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import numpy as np
import torch

from paper13 import cost

torch.set_num_threads(p.num_threads)
configs = cost.qwen3_configs()
rows = cost.reference_rows()
recomputed = cost.recompute_reference(rows, configs, p.intensity)
run.save_table(recomputed, "reference_recomputed")
err = recomputed.groupby("attention")[["compute_rel_err", "memory_rel_err"]].max().max(axis=1)
as_in_utils = cost.recompute_reference(rows, configs, p.intensity, published=False)
q0 = recomputed[(recomputed["model"] == "Qwen3-0.6B") & (recomputed["query_id"] == 0) & (recomputed["trial"] == 1)].iloc[0]
run.log_metrics({
    "ref_dense_max_rel_err": float(err["dense"]),
    "ref_blocktopk_max_rel_err": float(err["block_topk"]),
    "ref_blocktopk_max_rel_err_utils_sign": round(float(as_in_utils.loc[as_in_utils["attention"] == "block_topk", "memory_rel_err"].max()), 6),
    "ref_prompt_len_q0": int(q0["prompt_len"]),
    "mem_over_compute_06b_n1": round(float(q0["our_memory_cost"] / q0["our_compute_cost"]), 3),
})  # fmt: skip
recomputed.groupby(["model", "attention"])[["compute_rel_err", "memory_rel_err"]].max()

# %% [markdown]
# Where the eFLOPs go: parameter compute (2P per token), attention compute, KV memory access —
# every Qwen3 size, N = 1 and N = 32, the 128 transcribed 0.6B generation lengths (mean ~11k tokens)
# after the mean solved prompt.

# %%
lengths = np.concatenate(rows.loc[(rows["attention"] == "dense") & (rows["trial"] == 1), "generation_length"].tolist())
prompt = int(round(recomputed.loc[recomputed["attention"] == "dense", "prompt_len"].mean()))
breakdown = [cost.cost_breakdown(cfg, prompt, lengths, n, p.intensity) for cfg in configs.values() for n in (1, 32)]
import pandas as pd

breakdown = pd.DataFrame(breakdown)
run.save_table(breakdown, "cost_breakdown")
share32 = breakdown[(breakdown["model"] == "Qwen3-32B") & (breakdown["trials"] == 1)]["attention_share"].iloc[0]
sp_cfg = configs[p.sparse_model]
dense_sp = cost.dense_cost(sp_cfg, prompt, p.sparse_gen_len).eflops(p.intensity)
topk_sp = cost.block_topk_cost(sp_cfg, prompt, p.sparse_gen_len, block=p.sparse_block, topk=p.sparse_topk).eflops(p.intensity)
run.log_metrics({
    "attention_share_32b": round(float(share32), 4),
    "blocktopk_cost_ratio": round(topk_sp / dense_sp, 4),
    "sparse_gain_low_cost_pts": None,  # needs the sparse models' traces (not offline)
    "sparse_gain_high_cost_pts": None,
})  # fmt: skip
breakdown.round(3)

# %% [markdown]
# FLOPs-only vs eFLOPs: the cheapest (model, N) reaching each coverage target.

# %%
pass1 = cost.reference_accuracy(p.benchmark)
targets = np.linspace(p.target_min, p.target_max, p.target_count)
kw = {"floor": p.threshold_floor, "intensity": p.intensity}
table, picks, summary = cost.compare_rules(configs, pass1, prompt, lengths, p.trials, targets, kappa=p.coverage_kappa, **kw)
run.save_table(table, "frontier_configs")
run.save_table(picks, "frontier_picks")
sweep = []
for kappa in p.kappa_sensitivity:
    s = cost.compare_rules(configs, pass1, prompt, lengths, p.trials, targets, kappa=kappa, **kw)[2]
    sweep.append({"kappa": kappa} | s)
sweep = pd.DataFrame(sweep)
run.save_table(sweep, "frontier_kappa_sweep")
holds_all = bool(((sweep["eflops_not_smaller_share"] >= 1) & (sweep["eflops_larger_count"] >= 1)).all())
run.log_metrics({
    "frontier_eflops_not_smaller_share": round(summary["eflops_not_smaller_share"], 4),
    "frontier_eflops_larger_count": summary["eflops_larger_count"],
    "frontier_eflops_threshold_b": summary["eflops_threshold_b"],
    "frontier_flops_threshold_b": summary["flops_threshold_b"],
    "frontier_max_excess": round(summary["max_excess"], 4),
    "frontier_n_targets": summary["n_targets"],
    "frontier_shift_holds_all_kappa": int(holds_all),
})  # fmt: skip
picks[["target", "flops_model", "flops_trials", "eflops_model", "eflops_trials", "excess"]].round(3)

# %%
sweep.round(3)

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
palette = dict(zip(configs, sns.color_palette("viridis", len(configs))))
for ax, col, label in ((axes[0], "flops", "FLOPs only (compute)"), (axes[1], "eflops", f"eFLOPs (compute + {p.intensity:g} x bytes)")):
    for name, g in table.groupby("model", sort=False):
        ax.plot(g[col], g["coverage"], "o-", ms=3, color=palette[name], label=name)
    front = cost.pareto(table, col)
    ax.step(front[col], front["coverage"], "k--", where="post", lw=1, label="frontier")
    ax.set(xscale="log", xlabel=f"{label} per query", ylabel=f"{p.benchmark} coverage (model, kappa={p.coverage_kappa:g})")
axes[0].legend(fontsize=7)
axes[2].plot(picks["target"], picks["flops_params_b"], "s-", label="FLOPs-only pick")
axes[2].plot(picks["target"], picks["eflops_params_b"], "o-", label="eFLOPs pick")
axes[2].set(yscale="log", xlabel="coverage target", ylabel="chosen model (B params)", title="the best size moves up")
axes[2].legend()
fig.tight_layout()
run.save_figure(fig, "fig1_frontiers")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
b1 = breakdown[breakdown["trials"] == 1].set_index("model")[["param_compute", "attention_compute", "kv_memory"]]
(b1.div(b1.sum(axis=1), axis=0)).plot.bar(stacked=True, ax=ax)
ax.set(ylabel="share of eFLOPs (N = 1)", title=f"where test-time cost goes (mean length {lengths.mean():.0f} tokens)")
fig.tight_layout()
run.save_figure(fig, "fig2_cost_breakdown")
