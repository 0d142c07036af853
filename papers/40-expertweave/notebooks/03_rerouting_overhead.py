# %% [markdown]
# # 40 · ExpertWeave — cost of batched rerouting in one MoE layer
# One MoE layer shaped like DeepSeek-V2-Lite's (cpu: at 1/4 width; gpu: full width, bf16 on
# CUDA), random init, with synthetic adapters that each tune a few of its 64 experts. At a batch
# of 256 tokens (requests of several adapters and the base model) we time the base layer
# (transformers' eager expert loop), the weaved layer without rerouting (our loop over the
# [M + N E_max] tensor, base model only), with every token on the base model (the rerouting
# gather runs and maps to itself), with the mixed adapters (rerouting and more distinct experts),
# and the rerouting gather alone, precomputed-offset (one add + one gather) and unfused
# (recomputed from adapter ids in every layer). The paper: its fused kernel
# costs < 1% of TTFT/TPOT, the unfused PyTorch ops 29% (Fig. 7). Feeds the reroute-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"layer_adapters": 20}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p40

# %%
from shared import notebook

run = notebook.start("40", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd
import torch

from paper40 import esft, weave
from shared import zoo

torch.set_num_threads(p.num_threads)
dtype = getattr(torch, p.layer_dtype)
block = esft.moe_blocks(zoo.build(p.layer_model, seed=run.seed))[0][1].to(run.device, dtype).eval()
tuned = weave.synthetic_adapters(block, p.layer_adapters, p.layer_tuned_experts, seed=run.seed)
storage = "virtual" if run.device == "cpu" else "dense"  # CUDA virtual memory is out of scope
weaved = weave.WeavedMoe(block, tuned, e_max=p.layer_tuned_experts, storage=storage).eval()
g = torch.Generator().manual_seed(run.seed)
requests = p.layer_tokens // p.layer_seq_len
hidden = torch.randn(requests, p.layer_seq_len, p.layer_model.d_model, generator=g).to(run.device, dtype)
adapter_ids = (torch.arange(requests) % (p.layer_adapters + 1) - 1).to(run.device)  # base (-1) and every adapter

# %%
with torch.no_grad():  # the weaved layer serving only base rows is the base layer, to float rounding
    same = float((weaved(hidden) - block(hidden)).abs().max())
    weaved.token_offsets = torch.zeros(p.layer_tokens, dtype=torch.long, device=run.device)
    same_rerouted = float((weaved(hidden) - block(hidden)).abs().max())
    weaved.token_offsets = None
t = weave.layer_timings(block, weaved, hidden, adapter_ids, repeats=p.layer_repeats, warmup=p.layer_warmup,
                        num_threads=p.num_threads, device=run.device)
table = pd.DataFrame([{"variant": k, "median_s": v, "vs_base_layer": v / t["layer_base"]} for k, v in t.items()])
run.save_table(table, "layer_timings")
run.log_metrics({"layer_weaved_base_rows_max_diff": same_rerouted, "layer_weaved_no_reroute_max_diff": same,
                 "layer_requests": requests})
run.log_timings({
    "reroute_overhead_frac": t["reroute"] / t["layer_base"],
    "reroute_unfused_overhead_frac": t["reroute_unfused"] / t["layer_base"],
    "layer_reroute_increase": t["layer_weaved_base_rows"] / t["layer_weaved_no_reroute"] - 1,
    "layer_mixed_increase": t["layer_weaved_mixed"] / t["layer_weaved_no_reroute"] - 1,
    "layer_weaved_vs_transformers": t["layer_weaved_no_reroute"] / t["layer_base"] - 1,
    "layer_base_s": t["layer_base"],
    "layer_device": run.device,
})
table

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, ax = plt.subplots(figsize=(7, 3.6))
show = table.assign(percent=100 * (table["vs_base_layer"] - table["variant"].str.startswith("layer").astype(float)))
show = show[show["variant"] != "layer_base"]
sns.barplot(data=show, x="percent", y="variant", ax=ax, color="tab:blue")
for i, v in enumerate(show["percent"]):
    ax.text(v, i, f" {v:+.2f}%", va="center", fontsize=8)
ax.axvline(1, color="k", ls=":", lw=1, label="paper: fused rerouting < 1%")
ax.axvline(29, color="r", ls=":", lw=1, label="paper: unfused PyTorch 29%")
ax.legend(fontsize=8)
ax.set(xlabel="% of the base MoE layer's time (added time for the layer variants)", ylabel="",
       title=f"{p.layer_tokens} tokens, {p.layer_adapters} adapters x {p.layer_tuned_experts} tuned experts "
             f"of {p.layer_model.n_experts}, {run.device}, {p.layer_dtype}")
fig.tight_layout()
run.save_figure(fig, "fig3_rerouting_overhead")
