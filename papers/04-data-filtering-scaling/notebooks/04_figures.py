# %% [markdown]
# # 04 · Scaling laws for data filtering — figures
# Plots only, from the tables notebooks 01-03 saved.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p04

# %%
from shared import notebook

run = notebook.start("04", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from shared import scaling


def curves_figure(prefix: str, noises, bucket_size: int, title: str):
    """Left: single buckets, observed (points) and their fits (lines). Right: top-k pools,
    observed (points) and predicted from the bucket fits alone (lines)."""
    mean = run.load_table(f"{prefix}_curves")
    fits = run.load_table(f"{prefix}_bucket_fits")
    preds = run.load_table(f"{prefix}_pool_predictions")
    unit = p.bucket_unit / bucket_size
    colors = sns.color_palette("viridis", len(noises))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for i, row in fits.iterrows():
        obs = mean[(mean["kind"] == "bucket") & (mean["first"] == i + 1)]
        law = scaling.qqt.predict(row[["a", "b", "tau", "d"]].to_dict(), n=obs["n"] * unit, pool=bucket_size * unit)
        axes[0].errorbar(obs["n"], obs["error"], yerr=obs["error_sem"], fmt="o", ms=3, color=colors[i], capsize=1.5,
                         label=f"{row['bucket']}: b={row['b']:.3f}, τ={row['tau']:.2f}")
        axes[0].plot(obs["n"], law, color=colors[i], lw=1.4)
    for k, g in preds.groupby("k"):
        obs = mean[(mean["kind"] == "top") & (mean["k"] == k)]
        axes[1].errorbar(obs["n"], obs["error"], yerr=obs["error_sem"], fmt="o", ms=3, color=colors[k - 1], capsize=1.5,
                         label=f"top{k} observed")
        axes[1].plot(g["n"], g["predicted"], color=colors[k - 1], lw=1.4,
                     label=f"top{k} predicted" + (" (= bucket1 fit)" if k == 1 else ""))
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="samples seen (compute)")
        ax.axvline(bucket_size, color="grey", lw=0.6, ls=":")
    axes[0].set(ylabel="test error", title="single buckets: observed and QQT fit")
    axes[1].set(title="pools top-k: observed vs predicted (never trained on for the fit)")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    return fig


fig = curves_figure("ts", p.noises, p.bucket_size,
                    f"Teacher-student (simulation), d = {p.n_dim}, {p.n_seeds} seeds, {run.scale} scale")
run.save_figure(fig, "fig1_ts_error_vs_samples")

# %%
fig = curves_figure("digits", p.digits_noises, p.digits_bucket_size,
                    f"scikit-learn digits, softmax regression, {p.digits_n_seeds} splits, {run.scale} scale")
run.save_figure(fig, "fig2_digits_error_vs_samples")

# %% [markdown]
# ## Best pool against compute: observed, predicted by our fits, and by the authors' parameters

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for ax, prefix, name in ((axes[0], "ts", "teacher-student"), (axes[1], "digits", "digits")):
    best = run.load_table(f"{prefix}_best_pools")
    ax.plot(best["n"], best["observed_best_k"], "o-", color="C0", label="observed best pool")
    ax.plot(best["n"], best["predicted_best_k"] + 0.08, "s--", color="C3", label="predicted (QQT fit of buckets)")
    ax.set(xscale="log", xlabel="compute budget (samples seen)", ylabel="best pool: top-k buckets",
           yticks=[1, 2, 3, 4], ylim=(0.6, 4.4), title=name)
    ax.legend(fontsize=7)
pub = run.load_table("published_pool_curves")
for k in range(1, 5):
    axes[2].plot(pub["samples_seen"], pub[f"top{k}_error"], color=sns.color_palette("viridis", 4)[k - 1],
                 label=f"top {10 * k}%")
for x in p.published_budgets:
    axes[2].axvline(x, color="grey", lw=0.6, ls=":")
axes[2].set(xscale="log", xlabel="samples seen", ylabel="predicted ImageNet error",
            title="authors' parameters (T-MARS buckets)")
axes[2].legend(fontsize=7)
fig.suptitle("Data curation is not compute agnostic: the best pool grows with compute")
run.save_figure(fig, "fig3_best_pool_vs_compute")

# %% [markdown]
# ## Fitted vs published parameters (qualitative: different data, task and error scale)

# %%
sources = {"ours: teacher-student": run.load_table("ts_bucket_fits"),
           "ours: digits": run.load_table("digits_bucket_fits"),
           "published: T-MARS / DataComp": run.load_table("published_params")}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for j, (name, table) in enumerate(sources.items()):
    x = np.arange(1, len(table) + 1) + (j - 1) * 0.08
    axes[0].plot(x, table["b"], "o-", label=name)
    axes[1].plot(x, table["tau"], "o-", label=name)
axes[0].set(xlabel="bucket (1 = cleanest / top 0-10%)", ylabel="utility b (more negative = more useful)",
            xticks=[1, 2, 3, 4], title="utility b")
axes[1].set(xlabel="bucket", ylabel="half-life τ (epochs)", yscale="log", xticks=[1, 2, 3, 4],
            title="half-life τ of the utility")
axes[0].legend(fontsize=7)
run.save_figure(fig, "fig4_fitted_vs_published")
