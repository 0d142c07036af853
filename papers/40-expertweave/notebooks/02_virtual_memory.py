# %% [markdown]
# # 40 · ExpertWeave — expert memory on demand-paged virtual memory
# Three parts. (1) Real OS virtual memory: per MoE layer one anonymous mmap reservation of
# (M + N E_max) expert slots, N (vmem_adapter_slots) more than the adapters loaded, as the
# paper reserves for the adapters a server may load; the base experts and then each adapter's
# experts (our adapters' per-layer counts from notebook 01) are written one adapter at a time,
# and RssAnon (/proc/self/status) is read after each: it should grow by the written experts
# (rounded to pages), not by the reserved size. (2) The paper's Table 1: S_i = 1 - avg/max and F_mem = 1.51
# recomputed from its numbers. (3) KV capacity left on one device when serving n adapters as
# merged models, padded, or weaved: a model from our model's byte counts, with the device
# budget set in proportion to the paper's single-NPU numbers (810K / 6K tokens).
# Feeds the claims rss-*, table1-*, kv-*.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"vmem_expert_bytes": 4194304}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p40

# %%
from shared import notebook

run = notebook.start("40", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper40 import esft, vmem
from shared import zoo

adapters = run.load_table("adapters")
counts = [[int(c) for c in s.split()] for s in adapters["experts_per_layer"]]
# the base model's sizes from its spec (float32 weights), without loading it
spec = zoo.ModelSpec.model_validate_json((run.artifact("tinylm") / p.base_model / zoo.SPEC_FILE).read_text())
n_layers, n_base, e_max = len(counts[0]), spec.n_experts, max(max(c) for c in counts)
n_slots = p.vmem_adapter_slots or len(counts)
expert_bytes = esft.expert_bytes(spec.d_model, spec.d_expert)  # float32 gate, up, down projections
slot_bytes = p.vmem_expert_bytes or expert_bytes
print(f"{n_layers} layers, M={n_base}, N={n_slots}, E_max={e_max}, expert {slot_bytes} bytes, page {vmem.PAGE}")

# %% [markdown]
# ## (1) RSS while loading the base and the adapters into the virtual tensors

# %%
growth = vmem.rss_growth(counts, n_base, e_max, n_slots, slot_bytes)
reserved_only = growth.attrs["reserved_only_growth_bytes"]
growth["rss_over_page_rounded"] = growth["rss_growth_bytes"] / growth["page_rounded_bytes"]
run.save_table(growth, "rss_growth")
last = growth.iloc[-1]
run.log_metrics({
    "vmem_slot_bytes": int(slot_bytes),
    "vmem_reserved_bytes": int(last["reserved_bytes"]),
    "vmem_used_bytes": int(last["used_bytes"]),
    "vmem_page_rounded_bytes": int(last["page_rounded_bytes"]),
    "vmem_padded_bytes": int(last["padded_bytes"]),
    "vmem_padded_over_used": round(float(last["padded_bytes"] / last["used_bytes"]), 4),  # = our F_mem with N = adapters
})
# RSS is measured, so it goes to timings.json (it can move by a few pages run to run)
run.log_timings({
    "rss_growth_over_written": float(last["rss_growth_bytes"] / last["page_rounded_bytes"]),
    "rss_growth_min_over_written": float(growth["rss_over_page_rounded"].min()),
    "rss_growth_over_padded": float(last["rss_growth_bytes"] / last["padded_bytes"]),
    "rss_growth_over_reserved": float(last["rss_growth_bytes"] / last["reserved_bytes"]),
    "rss_reservation_only_bytes": int(reserved_only),
})
growth

# %% [markdown]
# ## (2) The paper's Table 1: adapter sparsity S_i and the fragmentation factor F_mem

# %%
t1 = vmem.table1(p.table1_n_base)
t1["abs_err"] = (t1["sparsity_recomputed"] - t1["sparsity"]).abs()
f = vmem.f_mem(p.table1_n_base, p.table1_e_max, t1["avg_experts"].tolist())
run.save_table(t1, "table1_recomputed")
run.log_metrics({
    "table1_f_mem": round(f, 4),
    "table1_sparsity_max_abs_err": round(float(t1["abs_err"].max()), 4),
    "table1_e_max_feasible": int(t1["max_experts"].max()),  # the transcription's largest per-layer count
    "table1_tuned_share_min": round(float(t1["tuned_share"].min()), 4),
    "table1_tuned_share_max": round(float(t1["tuned_share"].max()), 4),
})
t1

# %% [markdown]
# ## (3) KV capacity on one device: merged copies vs padding vs virtual weight tensors (a model)

# %%
model_bytes = zoo.param_counts(spec)["total"] * 4  # tied weights once (equal to the real model's, tests/shared/test_zoo.py)
adapter_bytes = [int(sum(c) * expert_bytes) for c in counts]
padded_bytes = n_layers * e_max * expert_bytes
budget = vmem.paper_budget(model_bytes, p.kv_merged1_tokens, p.kv_merged2_tokens)
kv_per_token = zoo.kv_cache_bytes_per_token(spec, bytes_per_value=4)
kv = vmem.kv_capacity(model_bytes, adapter_bytes, padded_bytes, kv_per_token, budget)
run.save_table(kv, "kv_capacity")
at = kv.set_index(["adapters", "deployment"])
run.log_metrics({
    "kv_model_bytes": int(model_bytes),
    "kv_budget_bytes": int(budget),
    "kv_ratio_weave_vs_merged_2": round(float(at.loc[(2, "expertweave"), "kv_tokens"] / max(at.loc[(2, "merged"), "kv_tokens"], 1)), 2),
    "kv_merged_3_oom": int(at.loc[(3, "merged"), "oom"]) if len(counts) >= 3 else None,  # 1: out of memory
    "kv_weave_3_fits": int(not at.loc[(3, "expertweave"), "oom"]) if len(counts) >= 3 else None,  # 1: fits
    "kv_gain_weave_vs_padding_1": round(float(at.loc[(1, "expertweave"), "kv_tokens"] / at.loc[(1, "padding"), "kv_tokens"] - 1), 4),
})
kv.pivot(index="adapters", columns="deployment", values="kv_tokens")

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
mib = 2**20
ax.plot(growth["adapters"], growth["reserved_bytes"] / mib, "k:", label="reserved (virtual)")
ax.plot(growth["adapters"], growth["padded_bytes"] / mib, "s--", label="padded: base + n x E_max per layer")
ax.plot(growth["adapters"], growth["page_rounded_bytes"] / mib, "o-", label="experts written (page-rounded)")
ax.plot(growth["adapters"], growth["rss_growth_bytes"] / mib, "x", ms=10, label="RSS growth (RssAnon)")
ax.set(xlabel="adapters loaded", ylabel="MiB", title=f"demand paging, {n_layers} layers x {slot_bytes // 1024} KiB experts")
ax.set_xticks(list(growth["adapters"]))
ax.legend(fontsize=8)
ax = axes[1]
piv = kv.pivot(index="adapters", columns="deployment", values="kv_tokens")[["merged", "padding", "expertweave"]]
piv.plot.bar(ax=ax, rot=0)
for x, (n, row) in enumerate(piv.iterrows()):
    if row["merged"] == 0:
        ax.annotate("OOM", (x - 0.17, 1), ha="center", color="tab:blue")
ax.set(yscale="symlog", ylabel="KV tokens left (model)", title="KV capacity under the paper-proportioned budget")
fig.tight_layout()
run.save_figure(fig, "fig2_memory")
