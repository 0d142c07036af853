# %% [markdown]
# # 24 · ETS — figures
# Accuracy against KV size per method and width, and the KV size of the retained tree at
# every depth (the claim width), from the tables of notebook 01.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p24

# %%
from shared import notebook

run = notebook.start("24", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import seaborn as sns

summary = run.load_table("methods")
per_depth = run.load_table("kv_per_depth")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
sns.scatterplot(data=summary, x="kv_tokens", y="accuracy", hue="method", style="width", s=90, ax=axes[0])
axes[0].set(xlabel="KV size (tokens of the retained tree, summed over depths; mean per problem)",
            ylabel="accuracy (weighted vote)", title="accuracy vs KV size")
at = per_depth[per_depth["width"] == p.claim_width]
sns.lineplot(data=at, x="depth", y="kv_tokens", hue="method", marker="o", ax=axes[1])
axes[1].set(xlabel="tree depth", ylabel="KV tokens (frontier + unique ancestors)", title=f"KV size per depth, W = {p.claim_width}")
fig.tight_layout()
run.save_figure(fig, "fig1_accuracy_vs_kv")
