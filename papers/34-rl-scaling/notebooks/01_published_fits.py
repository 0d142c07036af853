# %% [markdown]
# # 34 · RL post-training scaling — the published fits
# The authors fitted log L = -k(N) log X + E0(N), k(N) = k_max N / (N + N0), to the held-out
# ErrRate of GRPO runs on Qwen2.5 0.5B-72B (base and instruct; X = compute C or data D) and
# released the fitted parameters (data/fits_exp1.json; the per-step points are not released, so
# no refit is possible). We evaluate their k(N) at the seven sizes: how far it is from linear
# in N (k(72B)/k(32B) against 72/32), how close to k_max at 72B, where it is concave in log N,
# and whether E0 rises with N. Feeds the claims published-*.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p34

# %%
from shared import notebook

run = notebook.start("34", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper34 import law

fits = law.published_fits()
checks = law.published_checks(fits)
run.save_table(checks, "published_checks")
checks.T

# %%
metrics = {}
for r in checks.itertuples():
    key = f"published_{r.models}_{r.X}"
    metrics |= {f"{key}_kmax": round(r.k_max, 4), f"{key}_N0_billions": round(r.N0 / 1e9, 3),
                f"{key}_r2": round(r.r2, 5), f"{key}_k_ratio_72_32": round(r.k_ratio_72_32, 4),
                f"{key}_k72_over_kmax": round(r.k72_over_kmax, 4), f"{key}_E0_monotone": int(r.E0_monotone),
                f"{key}_concave_share_all": round(r.concave_share_all, 3)}
metrics |= {"published_max_k_ratio_72_32": round(float(checks["k_ratio_72_32"].max()), 4),
            "published_min_k72_over_kmax": round(float(checks["k72_over_kmax"].min()), 4),
            "published_all_concave_above_n0": int((checks["concave_share_above_n0"] == 1).all()),
            "published_min_concave_share_all": round(float(checks["concave_share_all"].min()), 3)}
run.log_metrics(metrics)
{k: v for k, v in metrics.items() if not k.startswith(("published_base", "published_instruct"))}

# %%
import matplotlib.pyplot as plt
import numpy as np

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
grid = np.geomspace(3e8, 2e11, 200)
for r in fits.itertuples():
    label = f"{r.models} / {r.X}: k_max={r.k_max:.3f}, N0={r.N0 / 1e9:.1f}B"
    line, = axes[0].plot(grid, law.k_of_n(r.k_max, r.N0, grid), label=label)
    axes[0].scatter(r.sizes, law.k_of_n(r.k_max, r.N0, r.sizes), color=line.get_color(), zorder=3)
    axes[0].axvline(r.N0, color=line.get_color(), ls=":", lw=1)
    axes[1].plot(r.sizes, r.E0, marker="o", color=line.get_color(), label=f"{r.models} / {r.X}")
axes[0].set(xscale="log", xlabel="parameters N", ylabel="k(N)", title="learning efficiency k(N) (dotted: N0)")
axes[0].legend(fontsize=8)
axes[1].set(xscale="log", xlabel="parameters N", ylabel="E0(N)", title="offset E0(N)")
axes[1].legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig1_published_k")
