# %% [markdown]
# # 08 · SCALE — figures
# Accuracy against generated tokens per method (the tau sweeps, random allocation, the S1-S2
# line), and what the difficulty scores see: the greedy step error rate and the mean score per
# operation and step position, from the tables of notebook 01.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p08

# %%
from shared import notebook

run = notebook.start("08", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import seaborn as sns

table = run.load_table("methods")
steps = run.load_table("eval_steps")
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
ax = axes[0]
ends = table[table["method"].isin(["s1", "s2"])].set_index("method")
ax.plot(ends.loc[["s1", "s2"], "tokens"], ends.loc[["s1", "s2"], "accuracy"], "k--", lw=1, label="S1-S2 line")
rnd = table[table["kind"].eq("random") | table["method"].isin(["s1", "s2"])].sort_values("tokens")
ax.plot(rnd["tokens"], rnd["accuracy"], "s-", color="grey", label="random allocation")
for signal, rows in table[table["kind"] == "scale"].groupby("signal"):
    rows = rows.sort_values("tokens")
    ax.plot(rows["tokens"], rows["accuracy"], "o-", label=f"SCALE ({signal})")
    at = rows[rows["tau"].round(3) == round(p.default_tau, 3)]
    ax.scatter(at["tokens"], at["accuracy"], s=120, facecolors="none", edgecolors="k")
for name, marker in (("s1", "v"), ("s2", "^"), ("s2_majority", "D")):
    row = table[table["method"] == name]
    ax.scatter(row["tokens"], row["accuracy"], marker=marker, s=80, zorder=5, label=name.replace("_", " "))
ax.set(xlabel="generated tokens per problem (assessment included)", ylabel="accuracy",
       title=f"accuracy vs tokens (circled: tau = {p.default_tau})")
ax.legend(fontsize=8)
long = steps.melt(id_vars=["op", "step"], value_vars=["wrong", f"score_{p.signal}"], var_name="what", value_name="value")
long["what"] = long["what"].map({"wrong": "greedy step wrong", f"score_{p.signal}": f"{p.signal} score"})
sns.barplot(data=long, x="op", y="value", hue="what", errorbar=None, ax=axes[1])
axes[1].set(xlabel="operation of the step", ylabel="share / mean score", title="difficulty per step type (gold context)")
fig.tight_layout()
run.save_figure(fig, "fig1_accuracy_vs_tokens")
