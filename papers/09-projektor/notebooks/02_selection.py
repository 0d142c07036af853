# %% [markdown]
# # 09 · Projektor — choosing the mixture for a budget of n samples
# Projektor selects by projected gradient ascent: the gradient of OT with respect to the
# mixture comes from the dual potentials of the pilot draws (the calibrated gradient), is
# chained through the stage-1 regression and the projection, and each step is projected
# back onto the simplex. Start: the uniform mixture. The selected mixture is then trained
# at n on the full sources and compared with the best mixture of the evaluation grid
# (the ground truth of notebook 01), and with the mixtures the baselines would pick
# (the best of their predictions). Feeds claims selection-*.

# %% tags=["parameters"]
scale = ""      # empty: params.yaml as composed; or smoke, cpu, gpu to compose afresh
overrides = {}  # this paper's params by dotted key, e.g. {"select_steps": 40}
out_dir = ""    # set by the pipeline; empty: interactive run, outputs under build/lab/p09

# %%
from shared import notebook

run = notebook.start("09", scale=scale, overrides=overrides, out_dir=out_dir)
p = run.params  # validated Params from config.py

# %%
import time

import numpy as np
import pandas as pd

from paper09 import experiment as ex
from paper09 import projektor, sources

market = sources.digits_market(p.val_size, p.label_noise, p.rotation_deg, p.clean_classes, p.revealed, run.seed)
scale_ot = projektor.feature_scale(market.x_val)
pilots = run.load_table("pilots")
predictions = run.load_table("predictions")
eval_mix = run.load_table("eval_mixtures")[[f"p{i}" for i in range(market.k)]].to_numpy()
model = ex.fit_projektor(market, pilots, p.n0, p.n1, p.target, scale_ot, p.label_cost, p.ot_draws)
n = p.claim_target

# %%
started = time.perf_counter()
selected, path = model.select(n, np.full(market.k, 1.0 / market.k), p.select_steps, p.select_lr, p.select_decay,
                              ex.rng(run.seed, ex.SELECT), maximize=(p.target == "accuracy"), progress=run.progress)
select_s = time.perf_counter() - started
path = pd.DataFrame(path)
path["predicted_accuracy"] = projektor.to_accuracy(path["predicted"], p.target)
run.save_table(path, "selection_path")
path.tail(3).round(3)

# %% [markdown]
# ## What each method would buy, trained at n

# %%
at = predictions[predictions["n"] == n]
picks = {"projektor": selected}
for method in ("power_law", "last_value"):  # per-mixture methods: the best of the evaluation grid
    best = at[at["method"] == method].sort_values(["predicted", "mixture"], ascending=[False, True]).iloc[0]
    picks[method] = eval_mix[int(best["mixture"])]
picks["mixing_law"] = ex.p_of(run.load_table("mixing_law_pick"), market.k)[0]  # its best on a fine grid (notebook 01)

started = time.perf_counter()
chosen = np.array(list(picks.values()))
acc = ex.selection_truth(market, chosen, n, p.truth_seeds, p.logreg_c, run.seed, purpose=ex.SELECT_TRUTH)
train_s = time.perf_counter() - started
grid_actual = at[at["method"] == "projektor"].set_index("mixture")["actual"]
grid_best = float(grid_actual.max())
rows = [{"method": m, **ex.mixture_columns(q), "actual": float(a), "regret_pts": 100 * (grid_best - float(a))}
        for (m, q), a in zip(picks.items(), acc)]
rows.append({"method": "grid_best", **ex.mixture_columns(eval_mix[int(grid_actual.idxmax())]), "actual": grid_best,
             "regret_pts": 0.0})
selection = pd.DataFrame(rows)
run.save_table(selection, "selection")
selection.round(3)

# %%
by = selection.set_index("method")
metrics = {
    "selection": {
        "n": n,
        "grid_best_accuracy": grid_best,
        "projektor_accuracy": float(by.loc["projektor", "actual"]),
        "projektor_predicted_accuracy": float(path["predicted_accuracy"].max() if p.target == "accuracy"
                                              else projektor.to_accuracy(path["predicted"].min(), p.target)),
        "regret_pts": {m: float(by.loc[m, "regret_pts"]) for m in picks},
        "projektor_minus_best_baseline_pts": 100 * float(by.loc["projektor", "actual"]
                                                         - max(by.loc[m, "actual"] for m in picks if m != "projektor")),
        "projektor_mixture": {name: float(v) for name, v in zip(sources.SOURCE_NAMES, selected)},
        "uniform_accuracy_predicted": float(path["predicted_accuracy"].iloc[0]),
        "steps_run": len(path),
    }
}
metrics["selection_regret_pts_projektor"] = metrics["selection"]["regret_pts"]["projektor"]  # top-level: claimed
metrics["selection_projektor_minus_best_baseline_pts"] = metrics["selection"]["projektor_minus_best_baseline_pts"]
run.log_metrics(metrics)
run.log_timings({"select_s": select_s, "selection_trainings_s": train_s})
metrics
