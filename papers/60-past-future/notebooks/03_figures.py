# %% [markdown]
# # 60 · Past-Future scheduler — figures
# Goodput, preemptions and queueing delay against load, per workload and policy (Llama-2-7B /
# A100 roofline; means over seeds), and the CPU-calibrated sweep's goodput.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p60

# %%
from shared import notebook

run = notebook.start("60", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params

# %%
import matplotlib.pyplot as plt
import seaborn as sns

table = run.load_table("goodput")
for metric, label, name in (("goodput_rps", "goodput (SLA-meeting req/s)", "fig1_goodput"),
                            ("preemptions", "preemptions (recompute)", "fig2_preemptions"),
                            ("queue_mean_s", "mean queueing delay (s)", "fig3_queueing")):
    grid = sns.relplot(data=table, x="load", y=metric, hue="policy", style="policy", col="workload", kind="line",
                       markers=True, height=3, aspect=1.0, facet_kws={"sharey": False}, errorbar=None)
    grid.set_axis_labels("load (x capacity)", label)
    grid.figure.suptitle(f"{label}: Llama-2-7B / {p.device} roofline", y=1.03)
    run.save_figure(grid.figure, name)

# %%
cpu_table = run.load_table("goodput_cpu_step_model")
grid = sns.catplot(data=cpu_table, x="load", y="goodput_rps", hue="policy", col="workload", kind="bar", height=3,
                   sharey=False, errorbar=None)
grid.set_axis_labels("load (x capacity)", "goodput (req/s)")
grid.figure.suptitle("goodput: tiny model, step times calibrated on this CPU", y=1.03)
run.save_figure(grid.figure, "fig4_goodput_cpu_step_model")
plt.close("all")
