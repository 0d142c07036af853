# %% [markdown]
# # 19 · COMET — KV memory saved, the accuracy / activation-bits trade-off, INT4 hardware
# KV-cache bytes per token at KV4 (INT4, an FP16 scale and an INT4 zero point per group)
# against FP16 for our models and the paper's LLaMA configurations; the (Linear weights + KV)
# bytes at W4 + KV4; quality against mean activation bits from notebooks 01-02; and which
# hardware has the INT4 tensor cores COMET's kernel runs on (`paper19.memory`). Feeds the kv-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"kv_context": 8192}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p19

# %%
from shared import notebook

run = notebook.start("19", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd
import torch

from paper19 import memory
from shared import zoo

torch.set_num_threads(p.num_threads)
llama = memory.llama_table(p.paper_group, p.paper_group, p.kv_context, p.kv_batch)
spec = zoo.ModelSpec.model_validate_json((run.artifact("tinylm") / p.tinylm_model / zoo.SPEC_FILE).read_text())
ours = {"tinylm " + p.tinylm_model: (spec.n_layers, spec.kv_heads, spec.head_dim, p.kv_group),
        "MiniLM-L6": (6, 12, 32, p.minilm_kv_group)}
rows = [{"model": name, "kv_fp16_bytes_per_token": memory.kv_bytes_per_token(L, kv, d),
         "kv4_bytes_per_token": memory.kv_bytes_per_token(L, kv, d, 4, g)} for name, (L, kv, d, g) in ours.items()]
kv = pd.concat([llama, pd.DataFrame(rows)], ignore_index=True)
kv["kv_saved"] = 1 - kv["kv4_bytes_per_token"] / kv["kv_fp16_bytes_per_token"]
run.save_table(kv, "kv_memory")
hardware = pd.DataFrame(memory.HARDWARE)
run.save_table(hardware, "int4_hardware")
l3 = llama.set_index("model").loc["LLaMA-3-70B"]
run.log_metrics({
    "kv4_saved_llama": round(float(llama["kv_saved"].min()), 4),
    "kv4_saved_ours_min": round(float(kv["kv_saved"].tail(len(ours)).min()), 4),
    "kv4_bytes_per_token_llama3_70b": float(l3["kv4_bytes_per_token"]),
    "kv_fp16_bytes_per_token_llama3_70b": float(l3["kv_fp16_bytes_per_token"]),
    "w4kv4_over_fp16_max": round(float(llama["w4kv4_ratio"].max()), 4),
    # COMET-W4Ax's kernel speedup over cuBLAS: nothing here measures it (no INT4 tensor cores on this
    # CPU or on Hopper GPUs, table above), so the metric is null: "not run" in the ledger
    "w4ax_kernel_speedup_over_cublas": None,
})
print("w4ax_kernel_speedup_over_cublas: not measured (needs INT4 tensor cores: Turing/Ampere/Ada; see int4_hardware)")
kv.round(4)

# %% [markdown]
# Quality against the mean stored bits of the activations (FP16 scales counted): the sweep of
# the INT8 group share runs from all-INT4 to all-INT8; COMET's outlier rule picks its own share.

# %%
import matplotlib.pyplot as plt
import seaborn as sns

tiny, mini = run.load_table("tinylm_schemes"), run.load_table("minilm_schemes")
order = [s for s in tiny["scheme"] if s != "fp32"]  # one colour per scheme in both panels (MiniLM may run fewer)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for ax, frame, y, label in ((axes[0], tiny, "ppl_rel_increase", "tiny LM: perplexity increase vs FP32"),
                            (axes[1], mini, "cosine_to_fp32", "MiniLM: embedding cosine to FP32")):
    q = frame[frame["scheme"] != "fp32"]
    sweep = q[q["fixed_fraction"].notna()].sort_values("act_bits")
    ax.plot(sweep["act_bits"], sweep[y], "-", color="grey", lw=1, label="COMET, fixed INT8 share")
    sns.scatterplot(data=q, x="act_bits", y=y, hue="scheme", hue_order=order, s=60, ax=ax, legend=ax is axes[1])
    ax.set(xlabel="mean activation bits", ylabel=y, title=label)
axes[1].legend(fontsize=7, loc="lower right")
sns.barplot(data=kv, y="model", x="kv_saved", ax=axes[2], color="tab:blue")
axes[2].set(xlim=(0, 1), xlabel="KV bytes saved at KV4 vs FP16", ylabel="", title="KV cache")
fig.tight_layout()
run.save_figure(fig, "fig1_tradeoff_kv")
