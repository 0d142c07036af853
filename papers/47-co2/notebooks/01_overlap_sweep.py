# %% [markdown]
# # 47 · CO2 — convergence and wall-clock under emulated slow links
# `world_size` real processes (torch.distributed, gloo; `shared.distributed.spawn`), each training
# the same tiny Llama on its own disjoint shard of the corpus artifact, with four algorithms:
# DDP-AdamW (gradient all-reduce every step), Local-AdamW (τ local steps, blocking average),
# SlowMo (τ, outer momentum, blocking) and CO2 (τ, the average launched asynchronously and
# overlapped with the next τ steps, used one round stale, staleness-gap penalty λ, outer-momentum
# clipping φ). The link is emulated (`shared.distributed.Link`): for each ratio the bandwidth at
# which an all-reduce of the parameters takes `ratio` × the measured compute time of one step.
# Then the ablation: long rounds (τ = `ablation_tau`), unshaped link, CO2 with and without the
# staleness-gap penalty and the clipping, and the released code's clipping (a no-op).
# Feeds every claim of claims.yaml. (One notebook, not two: each kernel pays torch and
# transformers imports, most of the smoke time.)

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"steps": 64, "ablation_tau": 8}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p47

# %%
from shared import notebook

run = notebook.start("47", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import math
import time

import pandas as pd
import torch

from paper47 import co2

torch.set_num_threads(p.num_threads)
spec = co2.spec_from_params(p, run.seed)
algos = co2.algos_from_params(p)  # ddp, local, slowmo, co2
started = time.perf_counter()
sweep = co2.run_sweep(p, algos, p.ratios, spec, run.artifact("corpus"), run.device)
sweep_seconds = time.perf_counter() - started
print(f"{len(sweep['runs'])} runs on {p.world_size} ranks in {sweep_seconds:.1f} s; "
      f"T_comp = {sweep['step_s'] * 1e3:.1f} ms/step, {sweep['nbytes'] / 1e6:.2f} MB of parameters")

# %%
curves = co2.curves_table(sweep)
runs = co2.runs_table(sweep)
run.save_table(curves, "curves")
run.save_table(runs, "runs")
histories = pd.DataFrame(
    [{"algo": r["algo"], "ratio": r["ratio"], **h} for r in sweep["runs"] for h in r["history"]])
run.save_table(histories, "train_loss")
runs.round(4)

# %%
target = co2.target_loss(curves, p.target_fraction, p.claim_ratio)
ttt = co2.times_to_target(curves, target)
run.save_table(ttt, "time_to_target")
at = ttt[ttt["ratio"] == p.claim_ratio].set_index("algo")["seconds"]


def ratio_of(a, b):
    return at[a] / at[b] if at[a] < float("inf") else co2.NEVER


# the losses do not depend on the link (same seeds, same arithmetic): one ratio's runs give them
final = runs[runs["ratio"] == p.claim_ratio].set_index("algo")["final_val_loss"]
spread = runs.groupby("algo")["final_val_loss"].agg(lambda s: s.max() - s.min()).max()
hidden = runs[(runs["kind"] == "co2") & (runs["ratio"] <= p.tau)]
ddp = runs[runs["kind"] == "ddp"]
metrics = {
    "final_loss_ddp": round(final["ddp"], 4),
    "final_loss_local": round(final["local"], 4),
    "final_loss_slowmo": round(final["slowmo"], 4),
    "final_loss_co2": round(final["co2"], 4),
    "co2_minus_ddp_loss": round(final["co2"] - final["ddp"], 4),
    "loss_spread_across_links": round(float(spread), 6),
    "target_loss": round(target, 4),
    "co2_model_exposed_fraction_max": round(float(hidden["model_fraction"].max()), 4) if len(hidden) else 1.0,
    "world_size": p.world_size,
}
timings = {
    "ttt_co2_over_ddp": round(ratio_of("co2", "ddp"), 4),
    "ttt_co2_over_slowmo": round(ratio_of("co2", "slowmo"), 4),
    "co2_exposed_fraction_max": round(float(hidden["exposed_fraction"].max()), 4) if len(hidden) else 1.0,
    "ddp_exposed_vs_model_abs_err": round(float((ddp["exposed_fraction"] - ddp["model_fraction_realised"]).abs().max()), 4),
    "step_ms": round(sweep["step_s"] * 1e3, 3),
    "sweep_s": round(sweep_seconds, 2),
}
run.log_metrics(metrics)
run.log_timings(timings)
metrics | timings

# %%
import matplotlib.pyplot as plt
import seaborn as sns

ref = curves[curves["ratio"] == p.claim_ratio]
fig, ax = plt.subplots(figsize=(5.5, 4))
sns.lineplot(data=ref, x="step", y="val_loss", hue="algo", marker="o", ax=ax)
ax.axhline(target, color="grey", ls=":", lw=1, label="target (DDP at 80%)")
ax.set(xlabel="inner step (equal samples)", ylabel="validation loss", title=f"loss vs steps ({p.world_size} ranks, τ={p.tau})")
ax.legend(fontsize=8)
run.save_figure(fig, "fig1_loss_vs_steps")

# %%
ratios = sorted(curves["ratio"].unique())
fig, axes = plt.subplots(1, len(ratios), figsize=(4.2 * len(ratios), 3.8), squeeze=False, sharey=True)
for ax, r in zip(axes[0], ratios):
    sns.lineplot(data=curves[curves["ratio"] == r], x="seconds", y="val_loss", hue="algo", marker="o", ax=ax,
                 legend=ax is axes[0][0])
    ax.axhline(target, color="grey", ls=":", lw=1)
    ax.set(xlabel="wall-clock (s)", ylabel="validation loss", title=f"T_ar / T_comp = {r:g}")
fig.tight_layout()
run.save_figure(fig, "fig2_loss_vs_wallclock")

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
sns.barplot(data=runs.assign(link=runs["ratio"].map("{:g}".format)), x="algo", y="exposed_fraction", hue="link", ax=ax)
for patch_group, (_, g) in zip(ax.containers, runs.groupby("ratio")):
    for patch, (_, row) in zip(patch_group, g.iterrows()):
        ax.plot([patch.get_x(), patch.get_x() + patch.get_width()], [row["model_fraction_realised"]] * 2, color="k", lw=1.5)
ax.set(ylabel="exposed communication / wall-clock", title="measured (bars) vs overlap model (black lines)")
ax.legend(title="T_ar / T_comp", fontsize=8)
run.save_figure(fig, "fig3_exposed_fraction")

# %% [markdown]
# ## Ablation: staleness-gap penalty and outer-momentum clipping
# Long rounds (τ = `ablation_tau`), unshaped link (the losses do not depend on it): CO2 without
# the penalty and without clipping (λ = 1, φ = ∞) against the penalised and the clipped variants,
# and the released code's clipping (a no-op: `torch.clamp` without assignment).

# %%
every = max(p.ablation_tau, p.ablation_steps // 8 // p.ablation_tau * p.ablation_tau)
spec = co2.spec_from_params(p, run.seed, steps=p.ablation_steps, eval_every=every)
base = dict(tau=p.ablation_tau, outer_momentum=p.outer_momentum, outer_lr=p.outer_lr, reference=p.co2_reference)
algos = [
    co2.Algo("co2", gap_penalty=1.0, clip=math.inf, label="no penalty, no clip", **base),
    co2.Algo("co2", gap_penalty=p.ablation_penalty, clip=math.inf, label=f"lambda={p.ablation_penalty:g}", **base),
    co2.Algo("co2", gap_penalty=1.0, clip=p.ablation_clip, label=f"phi={p.ablation_clip:g}", **base),
    co2.Algo("co2", gap_penalty=p.ablation_penalty, clip=p.ablation_clip, label="penalty + clip", **base),
]
# the link is unshaped (the losses do not depend on it): no calibration needed beyond the minimum
sweep = co2.run_sweep(p, algos, [math.inf], spec, run.artifact("corpus"), run.device, calibration_steps=2)
ablation = co2.curves_table(sweep)
run.save_table(ablation, "ablation_curves")
final = ablation.sort_values("step").groupby("algo", sort=False)["val_loss"].last()
final.round(4)

# %%
# the released code's clip: torch.clamp(m, -phi, phi) whose result is dropped -> m unchanged
m = torch.tensor([-0.5, 0.003, 0.2])
released = m.clone()
torch.clamp(released, min=-0.01, max=0.01)  # as in _co2_clip of fairscale-CO2 gossip/co2.py: a no-op
applied = co2.outer_update(torch.zeros(3), m, torch.zeros(3), beta=0.0, clip=0.01)[1]
ablation_metrics = {
    "ablation_loss_no_penalty": round(final["no penalty, no clip"], 4),
    "ablation_loss_penalty_clip": round(final["penalty + clip"], 4),
    "ablation_gap": round(final["no penalty, no clip"] - final["penalty + clip"], 4),
    "ablation_gap_penalty_only": round(final["no penalty, no clip"] - final[f"lambda={p.ablation_penalty:g}"], 4),
    "released_clamp_changes_nothing": int(torch.equal(released, m)),  # 1: the dropped clamp left m as it was
    "our_clip_bounds_momentum": int(bool(applied.abs().max() <= 0.01)),
}
run.log_metrics(ablation_metrics)
ablation_metrics

# %%
fig, ax = plt.subplots(figsize=(5.5, 4))
sns.lineplot(data=ablation, x="step", y="val_loss", hue="algo", marker="o", ax=ax)
ax.set(xlabel="inner step", ylabel="validation loss", title=f"CO2 ablation, τ={p.ablation_tau}")
ax.legend(fontsize=8)
run.save_figure(fig, "fig4_ablation")
