# %% [markdown]
# # 46 · NanoFlow — the nano-batch pipeline (a model) against the optimal bound
# For each model at the constant 1024/512 workload (and the Azure conv mix): the sequential
# iteration (every operation alone on the whole device, at achievable efficiencies) against the
# best nano-batched pipeline of a search over nano-batch counts and SM shares, with NanoFlow's
# measured interference curves (`paper46.pipeline`). Throughput = dense tokens / iteration time,
# as a fraction of the optimal bound of notebook 01. Feeds nano-speedup-70b,
# nano-fraction-optimal-70b, nano-fraction-optimal-models, nano-below-bound.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"share_step": 0.05}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p46

# %%
from shared import notebook

run = notebook.start("46", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd
import torch

from paper46 import costmodel as C
from paper46 import pipeline as P
from shared import servesim as S
from shared.distributed import Link

torch.set_num_threads(p.num_threads)
device, link = S.DEVICES[p.device], Link(p.net_bandwidth, p.net_latency_s)
eff = P.Efficiency(p.gemm_efficiency, p.gemm_m_half, p.memory_efficiency, p.network_efficiency)
curves = {"compute": P.Interference(name="gemm"),
          "memory": P.Interference(tuple(map(tuple, p.gemv_interference)), "gemv"),
          "network": P.Interference(tuple(map(tuple, p.net_interference)), "network")}
cost_table = run.load_table("cost_model")
cases = cost_table[cost_table["workload"].isin(["constant", "azure-conv"])]

rows, tables = [], {}
for r in run.progress(list(cases.itertuples()), desc="search"):
    model = C.MODELS[r.model]
    work = C.Workload(r.prompt, r.output, int(r.dense_batch), r.workload)
    costs = C.iteration_costs(model, work, device, link)
    table = P.search(model, costs, work, eff, link, curves, p.nano_counts, p.share_step, p.sim_layers)
    tables[(r.model, r.workload)] = table
    top = P.best(table)
    seq = P.layer_chain(model, costs, work, eff, link, 1, dict.fromkeys(P.RESOURCES, 1.0))
    full = {r: model.shape.n_layers * sum(t for res, t in seq if res == r) for r in P.RESOURCES}
    ideal = P.overlap_bound(full, curves)  # any overlapped schedule at the full batch, perfectly pipelined
    optimal = C.optimal_throughput(model, device)
    rows.append({"model": r.model, "workload": r.workload, "dense_batch": work.dense_batch, "k": int(top["k"]),
                 "r_compute": top["r_compute"], "r_memory": top["r_memory"], "r_network": top["r_network"],
                 "sequential_s": top["sequential_seconds"], "nano_s": top["seconds"], "speedup": top["speedup"],
                 "optimal_tok_s": optimal, "sequential_tok_s": work.dense_batch / top["sequential_seconds"],
                 "nano_tok_s": work.dense_batch / top["seconds"], "ideal_overlap_s": ideal,
                 "ideal_speedup": top["sequential_seconds"] / ideal,
                 **{f"seq_{r}_s": full[r] for r in P.RESOURCES}})
result = pd.DataFrame(rows)
result["sequential_frac_optimal"] = result["sequential_tok_s"] / result["optimal_tok_s"]
result["nano_frac_optimal"] = result["nano_tok_s"] / result["optimal_tok_s"]
run.save_table(result, "nanobatch")
head = p.models[0]
run.save_table(tables[(head, "constant")].head(20), f"search_top_{head}")
result.round(3)

# %%
const = result[result["workload"] == "constant"].set_index("model")
key = head.replace("-", "_")
metrics = {f"nano_speedup_{m.replace('-', '_')}": round(r.speedup, 4) for m, r in const.iterrows()}
metrics |= {f"nano_frac_optimal_{m.replace('-', '_')}": round(r.nano_frac_optimal, 4) for m, r in const.iterrows()}
metrics |= {f"ideal_overlap_speedup_{m.replace('-', '_')}": round(r.ideal_speedup, 4) for m, r in const.iterrows()}
metrics |= {f"sequential_frac_optimal_{m.replace('-', '_')}": round(r.sequential_frac_optimal, 4) for m, r in const.iterrows()}
metrics |= {"nano_frac_optimal_min": round(float(const["nano_frac_optimal"].min()), 4),
            "nano_frac_optimal_max": round(float(const["nano_frac_optimal"].max()), 4),
            f"nano_tok_s_{key}": round(float(const.loc[head, "nano_tok_s"]), 1),
            f"nano_best_k_{key}": int(const.loc[head, "k"]),
            **{f"nano_best_{c}_{key}": float(const.loc[head, c]) for c in ("r_compute", "r_memory", "r_network")}}
azure = result[(result["workload"] == "azure-conv") & (result["model"] == head)]
if len(azure):
    metrics |= {f"nano_speedup_{key}_azure_conv": round(float(azure["speedup"].iloc[0]), 4),
                f"nano_frac_optimal_{key}_azure_conv": round(float(azure["nano_frac_optimal"].iloc[0]), 4)}
run.log_metrics(metrics)
metrics

# %% [markdown]
# The bound against what the two schedules reach (and the ideal overlap bound), and the schedule of
# the headline model's best nano-batched configuration over two layers (each bar one operation of
# one nano-batch; shades alternate between nano-batches).

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 3.8))
x = list(range(len(const)))
per_gpu = const["optimal_tok_s"] / [C.MODELS[m].n_gpu for m in const.index]
scale_gpu = [C.MODELS[m].n_gpu for m in const.index]
w = 0.2
ax.bar([i - 1.5 * w for i in x], per_gpu, w, label="optimal bound", color="0.75")
ax.bar([i - 0.5 * w for i in x], const["sequential_tok_s"] / scale_gpu, w, label="sequential (model)")
ax.bar([i + 0.5 * w for i in x], const["nano_tok_s"] / scale_gpu, w, label="best of the search (model)")
ax.bar([i + 1.5 * w for i in x], const["dense_batch"] / const["ideal_overlap_s"] / scale_gpu, w,
       label="ideal overlap bound", color="C2", alpha=0.6)
for i, (m, r) in enumerate(const.iterrows()):
    ax.text(i + 0.5 * w, r.nano_tok_s / scale_gpu[i], f"{r.nano_frac_optimal:.0%}", ha="center", va="bottom", fontsize=8)
ax.set_xticks(x, const.index, fontsize=8)
ax.set(yscale="log", ylabel="tokens/s per GPU", title="Simulated throughput vs the optimal bound (1024/512, A100)")
ax.legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig2_bound_vs_achieved")

# %%
table = tables[(head, "constant")]
top = table[table["k"] > 1].iloc[0]  # the best nano-batched configuration, whether or not it wins
model = C.MODELS[head]
hrow = cases[(cases["model"] == head) & (cases["workload"] == "constant")].iloc[0]
work = C.Workload(hrow.prompt, hrow.output, int(hrow.dense_batch))
speed = {r: float(top[f"p_{r}"]) for r in P.RESOURCES}
layer = P.layer_chain(model, C.iteration_costs(model, work, device, link), work, eff, link, int(top["k"]), speed)
_, schedule = P.simulate([layer * 2] * int(top["k"]), top["rule"], record=True)
seq_layer = P.layer_chain(model, C.iteration_costs(model, work, device, link), work, eff, link, 1,
                          dict.fromkeys(P.RESOURCES, 1.0))
_, seq_schedule = P.simulate([seq_layer * 2], record=True)
run.save_table(schedule, f"schedule_{head}")
fig, axes = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True)
colors = dict(zip(P.RESOURCES, ["C0", "C1", "C2"]))
for ax, sched, title in ((axes[0], seq_schedule, "sequential"), (axes[1], schedule, f"k = {int(top['k'])} nano-batches")):
    for row in sched.itertuples():
        ax.barh(P.RESOURCES.index(row.resource), (row.end - row.start) * 1e3, left=row.start * 1e3,
                color=colors[row.resource], alpha=0.5 + 0.5 * (row.nano_batch % 2), edgecolor="k", lw=0.3)
    ax.set_yticks(range(3), P.RESOURCES)
    ax.set_title(f"{head}, two layers: {title}", fontsize=9)
axes[1].set_xlabel("ms")
fig.tight_layout()
run.save_figure(fig, "fig3_pipeline_schedule")
