# %% [markdown]
# # 21 · Horizon-LM — the streamed engine computes what autograd computes
# The same zoo Llama (random init, same seed) is trained on the same corpus batches by the
# standard autograd trainer (`shared.trainer.train`), by the Horizon engine (host-master
# parameters and AdamW, two device templates, recompute + manual gradient propagation,
# per-layer optimizer steps) and by the ZeRO-Offload-style trainer. First the gradients of
# one batch, then the losses and the parameters after `exact_steps` steps. Feeds the claims
# grads-equal-autograd, loss-trajectory-equal and params-equal.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"exact_steps": 10}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p21

# %%
from shared import notebook

run = notebook.start("21", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import copy

import pandas as pd
import torch

from paper21 import experiment, horizon
from shared import trainer, zoo

torch.set_num_threads(p.num_threads)
batches = experiment.corpus_batches(run.artifact("corpus"), p, seed=run.seed, device=run.device)
cfg = experiment.train_config(p, p.exact_steps)
reference = zoo.build(p.model, seed=run.seed)

# %% [markdown]
# Gradients of the first batch: the standard autograd backward over the whole graph against
# the engine's layer-by-layer `torch.autograd.grad` (no update), parameter by parameter.

# %%
grads = experiment.gradient_errors(reference, batches[0], cfg, device=run.device)
run.save_table(grads, "gradient_errors")
grads.sort_values("rel_err", ascending=False).head()

# %% [markdown]
# `exact_steps` optimizer steps each: losses step by step, and the parameters at the end.

# %%
standard = copy.deepcopy(reference)
history = trainer.train(standard, batches, cfg, device=run.device, seed=run.seed, progress=run.progress, desc="standard").history
standard.to("cpu")  # free the device for the next trainers
engine_model, offload_model = copy.deepcopy(reference), copy.deepcopy(reference)
engine = horizon.HorizonEngine(engine_model, cfg, device=run.device, checkpoints=p.checkpoints, overlap=True)
engine_losses = horizon.run_steps(engine, batches, p.exact_steps)
engine.close()
offload_losses = horizon.run_steps(horizon.OffloadTrainer(offload_model, cfg, device=run.device), batches, p.exact_steps)
trajectory = pd.DataFrame({"step": history["step"], "standard": history["train_loss"], "horizon": engine_losses,
                           "zero_offload_style": offload_losses})  # fmt: skip
run.save_table(trajectory, "loss_trajectory")
metrics = {
    "grad_max_rel_err": float(grads["rel_err"].max()),
    "loss_max_abs_diff": float((trajectory["horizon"] - trajectory["standard"]).abs().max()),
    "offload_loss_max_abs_diff": float((trajectory["zero_offload_style"] - trajectory["standard"]).abs().max()),
    "param_max_abs_diff": experiment.max_abs_diff(standard, engine_model),
    "offload_param_max_abs_diff": experiment.max_abs_diff(standard, offload_model),
    "exact_loss_first": round(float(trajectory["standard"].iloc[0]), 4),
    "exact_loss_last": round(float(trajectory["standard"].iloc[-1]), 4),
}
metrics["grads_equal"] = metrics["grad_max_rel_err"] <= p.exact_tolerance
run.log_metrics(metrics)
metrics

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for col, style in (("standard", "-"), ("horizon", "--"), ("zero_offload_style", ":")):
    axes[0].plot(trajectory["step"], trajectory[col], style, label=col, lw=2)
axes[0].set(xlabel="step", ylabel="training loss", title=f"Same losses ({p.model.n_layers} layers, {run.device})")
axes[0].legend()
axes[1].bar(range(len(grads)), grads["rel_err"].clip(lower=1e-12))
axes[1].set(yscale="log", xlabel="parameter tensor (forward order)", ylabel="relative error vs autograd (0 drawn at 1e-12)",
            title="Gradients: engine vs autograd")
axes[1].axhline(p.exact_tolerance, color="gray", ls="--", lw=1)
fig.tight_layout()
run.save_figure(fig, "fig1_exactness")

# %% [markdown]
# Data parallelism (`paper21.dp`, the README's torchrun mode): `dp_ranks` gloo processes, each
# the engine on its shard of every batch, the stages' gradients all-reduced before the host
# AdamW; against one engine on the whole batches, the same worker as a single rank (a
# `dp_layers`-layer model of the same width, on the CPU at every scale). Step 1's gradients
# are compared before the optimizer, then the parameters after `dp_steps` steps: everywhere, and
# where |g| >= 100 x AdamW's eps (`distributed.ADAMW_EPS_REGIME`), outside the elements where eps amplifies
# rounding (claims dp-grads-equal-single, dp-params-equal-outside-eps, dp-equals-single).

# %%
import time

from paper21 import dp
from shared import distributed

started = time.perf_counter()
dp_spec = p.model.model_copy(update={"n_layers": p.dp_layers})
dp_batches = [tuple(t.cpu() for t in batches[i]) for i in range(p.dp_steps)]
dp_args = (dp_spec, run.seed, experiment.train_config(p, p.dp_steps), dp_batches)
dp_kwargs = {"checkpoints": p.checkpoints, "record_grads": True}
single = distributed.spawn(dp.worker, 1, args=dp_args, kwargs=dp_kwargs, threads_per_rank=p.num_threads)[0]
dp_results = distributed.spawn(dp.worker, p.dp_ranks, args=dp_args, kwargs=dp_kwargs, threads_per_rank=p.num_threads)
dp_check = distributed.dp_agreement(dp_results, single, distributed.adamw_stable_mask(dp_spec, run.seed, dp_batches[0]))
run.log_metrics({f"dp_{k}": v for k, v in dp_check.items()})
run.log_timings({"dp_seconds": round(time.perf_counter() - started, 2)})
dp_check
