# %% [markdown]
# # 27 · S-LoRA — Unified Paging vs separate pools
# The same budget M of pages (one page = one d_model vector; shared.paging), offered the same
# requests (KV for prompt + output tokens, each with its adapter; ranks cycling over
# `lora_ranks`) until the first that does not fit: one unified pool (KV and adapters, any rank,
# LRU eviction of unused adapters) against a fixed split into a KV pool and max-rank adapter
# slots. Utilisation = pages holding data / pages reserved; achievable batch = requests admitted.
# Feeds the claims unified-utilisation, separate-utilisation, unified-batch, and against the
# BEST split of the sweep unified-over-best-split-utilisation and unified-over-best-split-batch.
# With a free list of equal pages the unified pool has no external fragmentation by construction
# (its waste when filling stops is below one request + one adapter): its high utilisation is by
# design; the comparison with the best tuned split is the test.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"paging_requests": 100}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p27

# %%
from shared import notebook

run = notebook.start("27", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd

from paper27 import workload
from shared import paging, zoo

model_values = zoo.param_counts(p.model)["total"]
budget = int(p.paging_budget_models * model_values // p.model.d_model)  # pages of the budget M
kv_per_token = paging.kv_pages_per_token(p.model.n_layers)
per_matrix = len(p.lora_targets) * p.model.n_layers  # adapted matrices of an adapter
ranks = workload.adapter_ranks(p.paging_n_adapters, p.lora_ranks)
sizes = {workload.adapter_name(k): 2 * r * per_matrix for k, r in enumerate(ranks)}
reqs = workload.trace(p.paging_n_adapters, p.paging_requests, 1.0, p.cv, p.alpha, tuple(p.input_range),
                      tuple(p.output_range), p.model.vocab_size, seed=run.seed, popularity=p.popularity)  # fmt: skip
offered = [(r.rid, r.prompt_len + r.output_len, r.adapter) for r in reqs]


def unified():
    return paging.UnifiedMemory(paging.PagePool(budget, p.model.d_model, materialize=False), adapter_sizes=sizes,
                                kv_per_token=kv_per_token)  # fmt: skip


rows = []
mem = unified()
rows.append({"memory": "unified", "adapter_fraction": None, "batch": paging.fill(mem, offered),
             "utilisation": mem.utilisation, "reserved": mem.reserved_pages, "adapters_resident": len(mem.resident)})  # fmt: skip
for f in sorted(set(p.separate_fractions) | {p.separate_adapter_fraction}):
    mem = paging.SeparateMemory.split(budget, f, sizes, kv_per_token)
    rows.append({"memory": "separate", "adapter_fraction": f, "batch": paging.fill(mem, offered),
                 "utilisation": mem.utilisation, "reserved": mem.reserved_pages, "adapters_resident": len(mem.resident)})  # fmt: skip
table = pd.DataFrame(rows)
run.save_table(table, "paging")
table.round(4)

# %%
uni = table[table["memory"] == "unified"].iloc[0]
sep = table[(table["memory"] == "separate") & (table["adapter_fraction"] == p.separate_adapter_fraction)].iloc[0]
separate = table[table["memory"] == "separate"]
best = separate.sort_values("utilisation").iloc[-1]  # the split of the sweep with the best utilisation
best_batch = int(separate["batch"].max())  # and the largest batch over the sweep (any split)
run.log_metrics({
    "paging_budget_pages": budget,
    "unified_utilisation": round(float(uni["utilisation"]), 4),
    "separate_utilisation": round(float(sep["utilisation"]), 4),
    "unified_batch": int(uni["batch"]),
    "separate_batch": int(sep["batch"]),
    "unified_over_separate_batch": round(float(uni["batch"] / sep["batch"]), 4),
    "separate_best_utilisation": round(float(best["utilisation"]), 4),
    "separate_best_fraction": float(best["adapter_fraction"]),
    "unified_minus_best_separate_utilisation": round(float(uni["utilisation"] - best["utilisation"]), 4),
    "separate_best_batch": best_batch,
    "unified_over_best_separate_batch": round(float(uni["batch"] / best_batch), 4),
})  # fmt: skip

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
labels = ["unified"] + [f"separate {f:.1f}" for f in table["adapter_fraction"].iloc[1:]]
colors = ["C0"] + ["C3" if f == p.separate_adapter_fraction else "C1" for f in table["adapter_fraction"].iloc[1:]]
for ax, col, ylabel in ((axes[0], "utilisation", "pages holding data / pages reserved"), (axes[1], "batch", "requests admitted")):
    ax.bar(labels, table[col], color=colors)
    ax.set(ylabel=ylabel)
    ax.tick_params(axis="x", rotation=60)
axes[0].axhline(0.9, ls="--", c="grey", lw=1)
fig.suptitle(f"budget {budget} pages of {p.model.d_model}; {p.paging_n_adapters} adapters of ranks {p.lora_ranks} "
             "(separate: share of M as max-rank slots)")  # fmt: skip
fig.tight_layout()
run.save_figure(fig, "fig3_paging")
