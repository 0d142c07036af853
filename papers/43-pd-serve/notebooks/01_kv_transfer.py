# %% [markdown]
# # 43 · P/D-Serve — KV-cache transfer, blockwise vs contiguous (real copies on this CPU)
# One request's KV cache (L layers, K and V, heads x head_dim, fp16) copied as 16-token blocks
# scattered over a paged pool (one `copy_` per block per layer) or as one contiguous buffer (one
# `copy_`), for several request sizes (paper43.kvcopy, timed by shared.timing: interleaved,
# median). The α-β model (per-operation cost, bandwidth) is fitted to both series and drives the
# simulated transfer of notebooks 02-03. Feeds the claim contiguous-transfer.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"kv_repeats": 30}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p43

# %%
from shared import notebook

run = notebook.start("43", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd
import torch

from paper43 import kvcopy

torch.set_num_threads(p.num_threads)
timed = kvcopy.measure(p.kv_tokens, n_layers=p.kv_layers, heads=p.kv_heads, head_dim=p.kv_head_dim,
                       block_tokens=p.kv_block_tokens, dtype=p.kv_dtype, repeats=p.kv_repeats, seed=run.seed,
                       progress=run.progress)
alpha, beta = kvcopy.fit_alpha_beta(timed["ops"], timed["bytes"], timed["seconds"])
timed["fitted_s"] = alpha * timed["ops"] + timed["bytes"] / beta
run.save_table(timed, "kv_copy_timings")
run.save_table(pd.DataFrame([{"alpha_s": alpha, "beta_Bps": beta}]), "kv_transfer_fit")
wide = timed.pivot(index="tokens", columns="layout", values="seconds")
at = wide.loc[p.kv_claim_tokens]
run.log_timings({"kv_contiguous_over_blockwise": float(at["contiguous"] / at["blockwise"]),
                 "kv_blockwise_s": float(at["blockwise"]), "kv_contiguous_s": float(at["contiguous"]),
                 "kv_alpha_s": alpha, "kv_beta_GBps": beta / 1e9})
run.log_metrics({"kv_claim_ops_blockwise": kvcopy.copy_ops(p.kv_claim_tokens, p.kv_block_tokens, p.kv_layers, False),
                 "kv_claim_bytes": int(timed.loc[timed["tokens"] == p.kv_claim_tokens, "bytes"].iloc[0])})
wide

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, ax = plt.subplots(figsize=(6, 4))
sns.scatterplot(data=timed, x="bytes", y="seconds", hue="layout", style="layout", s=60, ax=ax)
for layout, g in timed.groupby("layout"):
    ax.plot(g["bytes"], g["fitted_s"], "--", color="grey", lw=1)
ax.set(xscale="log", yscale="log", xlabel="KV bytes of the request", ylabel="copy time (s, median)",
       title=f"KV copy on this CPU: α = {alpha * 1e6:.2f} µs/op, β = {beta / 1e9:.1f} GB/s (dashed: fit)")
fig.tight_layout()
run.save_figure(fig, "fig1_kv_copy")
