# %% [markdown]
# # 35 · Mélange — real heterogeneous devices on this CPU
# A tiny decoder timed for real (shared.servesim.measure_step_times) at {1, 2} threads x {fp32, bf16}:
# four "device types" with measured step times, each fitted to a roofline step model
# (fit_step_model) that drives the same profiler and the same ILP. The prices are SYNTHETIC
# (pipelines/conf/p35: 1 unit per thread-hour, bf16 cheaper): the measured part is the profile
# table, not the prices. Feeds measured-devices-never-worse.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"cpu_repeats": 7}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p35

# %%
from shared import notebook

run = notebook.start("35", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import dataclasses
import time

import numpy as np
import pandas as pd
import torch

from paper35 import profile, solver, workloads
from shared import servesim as S
from shared import zoo

measured, fitted, devices = [], [], {}
start = time.perf_counter()
base = zoo.build(p.cpu_model, seed=run.seed)
for dtype in p.cpu_dtypes:
    model = base.to(getattr(torch, dtype))
    shape = S.ModelShape.of(model, f"tiny-{dtype}")
    for threads in p.cpu_threads:
        torch.set_num_threads(threads)
        name = f"{threads}t-{dtype}"
        # one thread: its own CPU time (robust on a busy machine); two: the wall clock (thread time misses the 2nd)
        rows = S.measure_step_times(model, p.cpu_prefill_lengths, [tuple(x) for x in p.cpu_decode_points],
                                    repeats=p.cpu_repeats, clock="thread_cpu" if threads == 1 else "wall")
        step = S.fit_step_model(shape, S.cpu_device(flops=1e12, memory=1e12), rows, combine="sum")
        devices[name] = step
        frame = pd.DataFrame(rows, columns=["prefill_tokens", "prefill_pairs", "decode_seqs", "decode_context", "measured_s"])
        frame["predicted_s"] = step.seconds(frame["prefill_tokens"], frame["prefill_pairs"], frame["decode_seqs"], frame["decode_context"])
        measured.append(frame.assign(device=name))
        fitted.append({"device": name, "clock": "thread_cpu" if threads == 1 else "wall", "mfu": step.mfu,
                       "prefill_mfu": step.prefill_mfu, "mbu": step.mbu, "overhead_s": step.overhead_s,
                       "price_synthetic": p.cpu_prices[name]})
torch.set_num_threads(p.num_threads)
measure_s = time.perf_counter() - start
measured, fitted = pd.concat(measured, ignore_index=True), pd.DataFrame(fitted)
measured["rel_error"] = measured["predicted_s"] / measured["measured_s"] - 1
run.save_table(measured, "cpu_step_times")
run.save_table(fitted, "cpu_devices")
fitted

# %%
# the profiler needs a KV budget: every device gets cpu_kv_tokens (a memory budget, not the machine's RAM)

devices = {n: dataclasses.replace(s, memory_fraction=1.0,
                                  device=dataclasses.replace(s.device, memory=s.shape.n_params * s.shape.bytes_per_param
                                                             + p.cpu_kv_tokens * s.shape.kv_bytes_per_token))
           for n, s in devices.items()}
bucket_list = profile.buckets(p.cpu_input_edges, p.cpu_output_edges)
start = time.perf_counter()
table, sweeps = profile.profile(devices, bucket_list, [s / 1e3 for s in p.cpu_slos_ms], progress=run.progress,
                                requests_per_slot=p.requests_per_slot, min_requests=p.min_requests,
                                max_batch=p.max_batch, growth=p.batch_growth, seed=run.seed)
prompt, output = workloads.sample("mixed", p.n_samples, run.seed, tuple(p.cpu_short), tuple(p.cpu_long), p.mixed_long_share)
shares = {"cpu-mixed": workloads.bucket_shares(prompt, output, p.cpu_input_edges, p.cpu_output_edges)}
alloc = solver.sweep(table, {n: p.cpu_prices[n] for n in devices}, shares, p.cpu_rates, p.slice_factor)
sav = solver.savings(alloc)
run.save_table(table, "cpu_profiles")
run.save_table(alloc, "cpu_allocations")
run.save_table(sav, "cpu_savings")
run.log_metrics({
    "cpu_melange_over_best_single_max": round(float((sav["melange_cost"] / sav["best_single_cost"]).max()), 4),
    "cpu_max_saving_vs_best": round(float(sav["saving_vs_best"].max()), 4),
    "cpu_devices_used_by_melange": int((alloc[alloc["policy"] == "melange"][[f"n_{n}" for n in devices]].sum() > 0).sum()),
})
run.log_timings({"cpu_measure_s": measure_s, "cpu_profile_and_ilp_s": time.perf_counter() - start,
                 "cpu_fit_max_rel_error": float(measured["rel_error"].abs().max())})
sav.round(3)

# %%
import seaborn as sns

grid = sns.relplot(data=alloc[np.isfinite(alloc["cost"])], x="rate", y="cost", hue="policy", style="policy",
                   col="slo_ms", kind="line", markers=True, height=3, aspect=1.2)
grid.set(xscale="log", yscale="log", xlabel="request rate (req/s)", ylabel="synthetic price per hour")
grid.figure.suptitle("Measured CPU 'devices' (tiny decoder, threads x dtype): Mélange vs each single device", y=1.03)
run.save_figure(grid.figure, "fig3_cpu_devices")
