# %% [markdown]
# # 37 · Fuyou — out-of-core AdamW on an SSD tier: exactly the in-memory updates
# The optimizer state (fp32 master weights, Adam m and v) of every chunk of the model (final
# norm, each decoder layer, the embedding) lives in a file on the SSD tier. We train the same
# model from the same seed three ways: in memory with `shared.trainer` (the reference), with
# the sequential out-of-core schedule (ZeRO-Infinity-like: backward, then read -> Adam ->
# write per chunk) and with Fuyou's overlapped schedule (each chunk's swap-in, Adam step and
# swap-out run on worker threads while backward continues below it). Feeds the claims
# updates-bit-identical and schedules-bit-identical.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"prefetch": 4}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p37

# %%
from shared import notebook

run = notebook.start("37", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import copy

import pandas as pd
import torch

from paper37 import experiment, offload, ssd
from shared import trainer

torch.set_num_threads(p.num_threads)
spec, model, batches = experiment.model_and_batches(p, run.artifact("corpus"), run.seed, run.device)
folder = p.ssd_dir or run.out_dir
n_params = sum(t.numel() for t in model.parameters())
print(f"{n_params / 1e6:.2f}M parameters; SSD tier under {folder}")

# %%
reference = copy.deepcopy(model)
trained = trainer.train(reference, batches, p.train, device=run.device, seed=run.seed, progress=run.progress,
                        desc="in memory")
runs, states = {}, {}
for schedule in offload.SCHEDULES:
    ours = copy.deepcopy(model)
    with ssd.Disk.temporary(folder) as disk:  # the real device, unthrottled: the speed does not touch the values
        rows, opt = offload.train(ours, batches, p.train, disk, schedule=schedule, progress=run.progress)
        states[schedule] = [opt.state(c.index) for c in opt.chunks]
        files = disk.files_bytes()
    runs[schedule] = (ours, rows, opt.chunks, files)


def max_abs_diff(a, b) -> float:
    return max((x.detach().cpu() - y.detach().cpu()).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


over, over_rows, chunks, files = runs["overlapped"]
seq = runs["sequential"][0]
# the master copy on the SSD tier is the model's weights, bit for bit
master_diff = max(
    (torch.from_numpy(state[: c.numel]) - torch.cat([t.detach().cpu().reshape(-1) for t in c.params])).abs().max().item()
    for c, state in zip(chunks, states["overlapped"])
)
same_state = all((a == b).all() for a, b in zip(states["overlapped"], states["sequential"]))
losses = pd.DataFrame({"step": over_rows["step"], "in_memory": trained.history["train_loss"].to_numpy(),
                       "sequential": runs["sequential"][1]["loss"], "overlapped": over_rows["loss"]})
run.save_table(losses, "exactness_losses")
table = pd.DataFrame([{"chunk": c.name, "tensors": len(c.params), "params": c.numel, "state_bytes": c.state_bytes}
                      for c in chunks])
run.save_table(table, "chunks")
table

# %%
metrics = {
    "n_params": n_params,
    "n_chunks": len(chunks),
    "state_bytes": int(table["state_bytes"].sum()),
    "ssd_file_bytes": files,
    "exact_max_abs_diff": max_abs_diff(over, reference),
    "exact_sequential_vs_trainer_max_abs_diff": max_abs_diff(seq, reference),
    "exact_schedules_max_abs_diff": max_abs_diff(over, seq),
    "exact_master_max_abs_diff": master_diff,
    "exact_states_equal": bool(same_state),
    "final_loss": round(float(over_rows["loss"].iloc[-1]), 6),
}
run.log_metrics(metrics)
metrics

# %% [markdown]
# Data parallelism (`paper37.dp`, the README's torchrun mode): `dp_ranks` gloo processes, each
# the overlapped out-of-core AdamW on its rows of every batch with its own SSD tier, a chunk's
# gradients all-reduced right before its update; against one run on the whole batches, the same
# worker as a single rank (a `dp_layers`-layer model of the same width, on the CPU at every
# scale). Step 1's gradients are compared before the optimizer, then the parameters after
# `dp_steps` steps: everywhere, and where |g| >= 100 x AdamW's eps (`distributed.ADAMW_EPS_REGIME`), outside the
# elements where eps amplifies rounding (claims dp-grads-equal-single, dp-params-equal-outside-eps,
# dp-equals-single).

# %%
import time

from paper37 import dp
from shared import distributed

started = time.perf_counter()
dp_spec = spec.model_copy(update={"n_layers": p.dp_layers})
dp_batches = [tuple(t.cpu() for t in batches[i]) for i in range(p.dp_steps)]
dp_args, dp_kwargs = (dp_spec, run.seed, p.train, dp_batches, folder), {"prefetch": p.prefetch, "record_grads": True}
single = distributed.spawn(dp.worker, 1, args=dp_args, kwargs=dp_kwargs, threads_per_rank=p.num_threads)[0]
dp_results = distributed.spawn(dp.worker, p.dp_ranks, args=dp_args, kwargs=dp_kwargs, threads_per_rank=p.num_threads)
dp_check = distributed.dp_agreement(dp_results, single, distributed.adamw_stable_mask(dp_spec, run.seed, dp_batches[0]))
dp_metrics = {f"dp_{k}": v for k, v in dp_check.items()}
run.log_metrics(dp_metrics)
run.log_timings({"dp_seconds": round(time.perf_counter() - started, 2)})
dp_metrics
