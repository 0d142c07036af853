# %% [markdown]
# # 54 · DistZO2 — (d) perturbation parallelism, DDP on the scalar gradient, 2D, on real processes
# Every strategy trains the same random-init model from the same seed on the same batches
# (`paper54.dist`): serial MeZO in this process; PertP (the + and - forwards on two gloo ranks,
# only the losses exchanged), DDP (each rank both forwards on half the batch, only the losses /
# g exchanged) and, at cpu scale, 2D = PertP x DDP on four ranks (`shared.distributed.spawn`,
# one thread per rank; every all-reduce held to an emulated `dist_link_*` network link).
# Parameters are compared with serial MeZO's (PertP bit for bit; DDP with serial MeZO on the
# concatenated batch) and steps/s with the serial run's. Feeds the dist-* claims.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"dist_steps": 50}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p54

# %%
from shared import notebook

run = notebook.start("54", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import time

import pandas as pd
import torch

from paper54 import dist, mezo
from shared import distributed, zoo

torch.set_num_threads(p.num_threads)
batches = mezo.random_batches(p.dist_model.vocab_size, 4, p.dist_batch, p.dist_seq, seed=run.seed)
cfg = mezo.ZOConfig(eps=p.eps, lr=p.dist_lr, seed=run.seed)
link = distributed.Link(bandwidth=p.dist_link_gbps * 1e9 / 8, latency_s=p.dist_link_latency_us * 1e-6)


def make_model():
    return zoo.build(p.dist_model, seed=run.seed).eval()


mezo.lm_loss(make_model(), *batches[0])  # import and initialise lazily loaded code once, before the ranks fork
started = time.perf_counter()
results = {}
for strategy in run.progress(p.dist_strategies, desc="strategies"):
    results[strategy] = dist.run(strategy, make_model, batches, cfg, p.dist_steps, link=link)
ref = results["serial"]
rows = []
for strategy, res in results.items():
    layout = dist.Layout.of(strategy)
    rows.append({"strategy": strategy, "ranks": res["world"], "pert": layout.pert, "data": layout.data,
                 "max_abs_diff_vs_serial": float((res["params"] - ref["params"]).abs().max()),
                 "ranks_agree": res["ranks_agree"], "step_s": res["step_s"], "exchange_s": res["exchange_s"],
                 "speedup_vs_serial": ref["step_s"] / res["step_s"],
                 "bytes_exchanged_per_rank": dist.exchanged_bytes(layout)})  # fmt: skip
table = pd.DataFrame(rows)
run.save_table(table, "strategies")
curves = pd.concat([pd.DataFrame(res["history"]).assign(strategy=s) for s, res in results.items()])
run.save_table(curves, "strategy_losses")
by = table.set_index("strategy")
n_params = sum(q.numel() for q in make_model().parameters())
metrics = {"dist_params": n_params, "dist_steps": p.dist_steps,
           "dist_first_order_ddp_bytes": 4 * n_params,  # what first-order DDP all-reduces per step (fp32 gradients)
           "dist_serial_loss_drop": round(ref["history"][0]["loss_plus"] - ref["history"][-1]["loss_plus"], 6)}
for s in by.index.drop("serial"):
    metrics |= {f"dist_{s}_max_abs_diff": float(by.loc[s, "max_abs_diff_vs_serial"]),
                f"dist_{s}_exact": bool(by.loc[s, "max_abs_diff_vs_serial"] <= 1e-6 and by.loc[s, "ranks_agree"]),
                f"dist_{s}_bytes_per_step": int(by.loc[s, "bytes_exchanged_per_rank"])}
for s in ("pertp", "ddp", "2d"):  # a strategy this scale does not run (2d needs four ranks): "not run" in the ledger
    metrics.setdefault(f"dist_{s}_max_abs_diff", None)
run.log_metrics(metrics)
run.log_timings({f"dist_{s}_speedup": round(float(by.loc[s, "speedup_vs_serial"]), 4) for s in by.index.drop("serial")}
                | {"dist_serial_step_s": round(float(ref["step_s"]), 5), "dist_seconds": round(time.perf_counter() - started, 2),
                   "dist_first_order_ddp_exchange_s": link.all_reduce_seconds(4 * n_params, 2)})  # fmt: skip
table

# %% [markdown]
# Modelled speedups (2D when it was not run; every strategy as it would run on idle cores): the
# parts measured in this process, one forward of the batch and one pass of z over the model, and
# the link's time for the one all-reduce, put together as each strategy schedules them
# (`dist.modelled_step_s`).

# %%
model = make_model()
params = mezo.indexed(model)
x, y = batches[0]
with torch.no_grad():
    t0 = time.perf_counter()
    for _ in range(3):
        mezo.lm_loss(model, x, y)
    forward_s = (time.perf_counter() - t0) / 3
    t0 = time.perf_counter()
    for i in range(3):
        mezo.apply(params, cfg.seed, 10_000 + i, [0.0])
    noise_s = (time.perf_counter() - t0) / 3
# the exchange: the emulated link's time for the strategy's one all-reduce (the measured exchange_s
# also holds the wait for the slower rank, which is load imbalance, not communication)
layouts = {s: dist.Layout.of(s) for s in dist.STRATEGIES}
modelled = {s: dist.modelled_step_s(s, forward_s, noise_s, link.all_reduce_seconds(dist.exchanged_bytes(lay), lay.world))
            for s, lay in layouts.items()}  # fmt: skip
model_table = pd.DataFrame([{"strategy": s, "modelled_step_s": v, "modelled_speedup": modelled["serial"] / v,
                             "measured_speedup": float(by.loc[s, "speedup_vs_serial"]) if s in by.index else float("nan")}
                            for s, v in modelled.items()])  # fmt: skip
run.save_table(model_table, "strategies_modelled")
# modelled speedups are over SERIAL MeZO on one device (not over ZO2's offloaded engine): the key says so
run.log_timings({f"dist_{s}_modelled_speedup_over_serial_mezo": round(modelled["serial"] / v, 4) for s, v in modelled.items() if s != "serial"}
                | {"dist_forward_s": forward_s, "dist_noise_pass_s": noise_s})  # fmt: skip
model_table

# %%
import matplotlib.pyplot as plt
import seaborn as sns

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
ax = axes[0]
plot = model_table.melt(id_vars="strategy", value_vars=["measured_speedup", "modelled_speedup"], var_name="kind",
                        value_name="speedup over serial")  # fmt: skip
sns.barplot(data=plot, x="strategy", y="speedup over serial", hue="kind", ax=ax)
ax.axhline(1, color="k", lw=0.8)
ax.set(title="steps/s vs serial MeZO (gloo, 1 thread per rank; 2D modelled if not run)")
ax = axes[1]
for s, g in curves.groupby("strategy", sort=False):
    ax.plot(g["step"], g["loss_plus"], label=s, lw=1.5 if s == "serial" else 1, ls="-" if s == "serial" else "--")
ax.set(xlabel="step", ylabel="L(θ + εz)", title="the same trajectory (same seed)")
ax.legend()
fig.tight_layout()
run.save_figure(fig, "fig4_distzo2")
