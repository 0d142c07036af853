# %% [markdown]
# # 46 · NanoFlow — the cost model and the optimal throughput
# Per iteration of a dense batch on a tensor-parallel group (`paper46.costmodel`): T_comp (FLOPs
# over the group's peak), T_mem (weights + KV cache over its bandwidth) and T_net (two ring
# all-reduces per layer over NVLink), all at the ideal roofline (100% of peak), for the five
# models NanoFlow was ported to on 8xA100 (LLaMA-3-8B on one). Each (model, workload) is classified
# by its largest time; the optimal throughput of a compute-bound workload is N_gpu·FLOPS / (2P).
# Feeds optimal-bound-70b, compute-bound-70b, compute-bound-all.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"dense_batch": 1024}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p46

# %%
from shared import notebook

run = notebook.start("46", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import pandas as pd
import torch

from paper46 import costmodel as C
from shared import servesim as S
from shared.distributed import Link

torch.set_num_threads(p.num_threads)
device, link = S.DEVICES[p.device], Link(p.net_bandwidth, p.net_latency_s)
workloads = [C.Workload(p.prompt_len, p.output_len, p.dense_batch, "constant")]
workloads += [C.Workload(a, b, p.dense_batch) for a, b in p.workloads]
if p.azure_mix:
    conv = S.Trace.azure("conv")
    workloads.append(C.Workload(round(float(conv.prompt.mean())), round(float(conv.output.mean())), p.dense_batch, "azure-conv"))

rows = []
for name in p.models:
    model = C.MODELS[name]
    for work in workloads:
        fit = C.fitting_batch(model, work, device, p.batch_step)
        costs = C.iteration_costs(model, fit, device, link)
        rows.append({"model": name, "workload": work.label, "prompt": work.prompt, "output": work.output,
                     "dense_batch": fit.dense_batch, "n_gpu": model.n_gpu,
                     **{k: costs[k] for k in ("t_comp", "t_mem", "t_weights", "t_kv", "t_net", "kv_gb")},
                     "bound": C.bound_by(costs), "optimal_tok_s": C.optimal_throughput(model, device),
                     "optimal_tok_s_per_gpu": C.optimal_throughput(model, device) / model.n_gpu})
costs = pd.DataFrame(rows)
run.save_table(costs, "cost_model")
costs.assign(**{c: costs[c] * 1e3 for c in ("t_comp", "t_mem", "t_weights", "t_kv", "t_net")}).round(1)

# %%
const = costs[costs["workload"] == "constant"].set_index("model")
head = p.models[0]
metrics = {f"optimal_tok_s_{m.replace('-', '_')}": round(r.optimal_tok_s, 1) for m, r in const.iterrows()}
metrics |= {f"optimal_tok_s_per_gpu_{m.replace('-', '_')}": round(r.optimal_tok_s_per_gpu, 1) for m, r in const.iterrows()}
metrics |= {f"compute_bound_{head.replace('-', '_')}": int(const.loc[head, "bound"] == "compute"),  # 1: yes
            "compute_bound_all_models": int((const["bound"] == "compute").all()),
            "compute_bound_share_all_workloads": round(float((costs["bound"] == "compute").mean()), 4),
            f"t_comp_ms_{head.replace('-', '_')}": round(const.loc[head, "t_comp"] * 1e3, 2),
            f"t_mem_ms_{head.replace('-', '_')}": round(const.loc[head, "t_mem"] * 1e3, 2),
            f"t_net_ms_{head.replace('-', '_')}": round(const.loc[head, "t_net"] * 1e3, 2)}
run.log_metrics(metrics)
metrics

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 3.8))
view = const.loc[p.models, ["t_comp", "t_weights", "t_kv", "t_net"]] * 1e3
x = range(len(view))
ax.bar([i - 0.27 for i in x], view["t_comp"], 0.27, label="T_comp")
ax.bar(list(x), view["t_weights"], 0.27, label="T_mem: weights")
ax.bar(list(x), view["t_kv"], 0.27, bottom=view["t_weights"], label="T_mem: KV cache")
ax.bar([i + 0.27 for i in x], view["t_net"], 0.27, label="T_net")
ax.set_xticks(list(x), [f"{m}\n({int(const.loc[m, 'dense_batch'])} tok, {int(const.loc[m, 'n_gpu'])} GPU)" for m in p.models], fontsize=8)
ax.set(ylabel="ms per iteration (ideal roofline)", title="Cost model, 1024 in / 512 out: every model compute-bound")
ax.legend(fontsize=8)
fig.tight_layout()
run.save_figure(fig, "fig1_cost_model")
