# %% [markdown]
# # 60 · Past-Future scheduler — the two step models
# The simulator's clock: (a) Llama-2-7B on an A100-80GB roofline (datasheet FLOP/s and bandwidth,
# shared.servesim.StepModel), the main one; (b) a real tiny Llama timed on this CPU
# (shared.servesim.measure_step_times) and fitted (fit_step_model: achieved FLOP fractions of prefill
# and decode, bandwidth fraction, a fixed overhead), checked on held-out shapes. Feeds calibrated-cpu-step-model and
# the second sweep of notebook 02.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"n_requests": 500}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p60

# %%
from shared import notebook

run = notebook.start("60", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import dataclasses

import numpy as np
import pandas as pd
import torch

from shared import servesim as S
from shared import zoo

torch.set_num_threads(p.num_threads)
a100 = S.StepModel(S.LLAMA2_7B, S.DEVICES[p.device])
run.log_metrics({"a100_kv_capacity_tokens": a100.kv_capacity_tokens(),
                 "kv_tokens": p.kv_tokens or a100.kv_capacity_tokens()})

# %%
model = zoo.build(p.cpu_model, seed=run.seed)
shape = S.ModelShape.of(model, "tiny-cpu")
# fit and held-out shapes in one interleaved measurement; with one torch thread, the thread's own CPU
# clock (wall-clock on a busy machine measured other processes: 67-316 % errors in earlier runs)
prefill = list(p.cpu_prefill_lengths) + list(p.cpu_heldout_prefill)
decode = [tuple(x) for x in p.cpu_decode_points] + [tuple(x) for x in p.cpu_heldout_decode]
rows = S.measure_step_times(model, prefill, decode, repeats=p.cpu_repeats,
                            clock="thread_cpu" if p.num_threads == 1 else "wall")
n_fp, n_hp, n_fd = len(p.cpu_prefill_lengths), len(p.cpu_heldout_prefill), len(p.cpu_decode_points)
held = np.zeros(len(rows), dtype=bool)
held[n_fp:n_fp + n_hp] = True
held[n_fp + n_hp + n_fd:] = True
fit_rows, held_rows = rows[~held], rows[held]
cpu = S.fit_step_model(shape, S.cpu_device(flops=1e12), fit_rows, combine="sum")  # nominal peak above a core's (~1.6e11 here): the fit absorbs it
columns = ["prefill_tokens", "prefill_pairs", "decode_seqs", "decode_context", "measured_s"]
timed = pd.concat([pd.DataFrame(fit_rows, columns=columns).assign(split="fit"),
                   pd.DataFrame(held_rows, columns=columns).assign(split="held-out")])
timed["predicted_s"] = cpu.seconds(timed["prefill_tokens"], timed["prefill_pairs"], timed["decode_seqs"], timed["decode_context"])
timed["rel_error"] = timed["predicted_s"] / timed["measured_s"] - 1
run.save_table(timed, "cpu_step_times")
held = timed[timed["split"] == "held-out"]
fitted = {**dataclasses.asdict(shape), "mfu": cpu.mfu, "mbu": cpu.mbu, "overhead_s": cpu.overhead_s, "prefill_mfu": cpu.prefill_mfu,
          "flops": cpu.device.flops, "bandwidth": cpu.device.bandwidth, "memory": cpu.device.memory}
run.save_table(pd.DataFrame([fitted]), "cpu_step_model")
run.log_timings({"cpu_calibration_max_rel_error": float(np.abs(held["rel_error"]).max()),
                 "cpu_mfu": cpu.mfu, "cpu_prefill_mfu": cpu.prefill_mfu, "cpu_mbu": cpu.mbu, "cpu_overhead_s": cpu.overhead_s})
timed
