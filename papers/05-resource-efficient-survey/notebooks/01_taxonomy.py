# %% [markdown]
# # 05 · Resource-efficient LLMs (survey) — the taxonomy of resources and metrics, and network volume
# The survey sorts resource efficiency into five resources — computation, memory, energy,
# money, network communication (§2.2.1) — and lists the metrics to report for each (§9.1).
# This notebook writes that taxonomy down as a table: for every metric, the survey's own
# definition and section, the unit, how `shared.metrics` measures it in this project, and
# whether that is a measurement, an estimate, or not applicable here (and why). The energy
# row's status is read off the energy meter on this run's device (NVML, RAPL, or an estimate).
#
# It then measures the one network metric, communication volume (§9.1.5): the bytes sent
# during one float32 all-reduce among `comm_world_size` ranks (torch.distributed gloo process
# groups over localhost TCP, one thread per rank), against the ring all-reduce's 2n(k-1)/k
# elements per rank. Feeds the claim allreduce-volume.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"comm_world_size": 3}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p05

# %%
from shared import notebook

run = notebook.start("05", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
from paper05 import resource_eval
from shared import metrics

with metrics.Energy(run.device) as probe:  # which energy source this device offers
    pass
taxonomy = resource_eval.taxonomy_table(probe.source)
run.save_table(taxonomy, "taxonomy")
print(f"energy on {run.device}: {probe.source}")
taxonomy[["resource", "metric", "survey_section", "unit", "status"]]

# %% [markdown]
# Communication volume of one all-reduce: the bytes written to the ranks' sockets during the
# call (`/proc/self/io` wchar: gloo sends with writev), all ranks together, against the ring
# formula times the number of ranks.

# %%
import pandas as pd

comm = resource_eval.allreduce_volume(p.comm_world_size, p.comm_numel, p.comm_timeout_s)
run.save_table(pd.DataFrame([comm]), "allreduce")
if not comm["correct"]:
    raise RuntimeError("all-reduce: a rank got a wrong sum")
run.log_metrics({
    "allreduce_world_size": p.comm_world_size,
    "allreduce_expected_bytes": int(comm["expected_bytes"]),
    "allreduce_bytes_ratio": round(comm["ratio"], 4),
})  # fmt: skip
run.log_timings({"allreduce_seconds": round(comm["seconds"], 4)})
comm
