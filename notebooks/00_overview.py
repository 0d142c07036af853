# %% [markdown]
# # efflab · overview of every paper
# The claims ledger of the last run — one table per paper with the paper's number, ours,
# and whether the claim holds at the scale that was run — and each paper's figures.
# Built from `reports/claims.json` (`python -m pipelines.claims`); the pipeline executes this
# notebook into `reports/overview.ipynb`.

# %% tags=["parameters"]
report_path = "reports/claims.json"

# %%
import json
import os

import pandas as pd
from IPython.display import Image, Markdown, display

from shared.paths import ROOT

os.chdir(ROOT)
report = json.loads(open(report_path).read())
summary = report["summary"]
display(Markdown(
    f"**{summary.get('holds', 0)} claims hold · {summary.get('does not hold', 0)} do not hold · "
    f"{summary.get('not run', 0)} not run** across {len(report['papers'])} papers."
))

# %%
rows = [
    {"paper": p["paper"], "title": p["title"], "scale": p["scale"], **{s: 0 for s in ("holds", "does not hold", "not run")}}
    for p in report["papers"]
]
for row, paper in zip(rows, report["papers"]):
    for claim in paper["claims"]:
        row[claim["status"]] += 1
pd.DataFrame(rows).set_index("paper")

# %%
for paper in report["papers"]:
    display(Markdown(f"## {paper['paper']}. {paper['title']}\n{paper['authors']} · {paper['venue']} · scale run: **{paper['scale']}**"))
    table = pd.DataFrame(paper["claims"])[["id", "paper_value", "source", "ours", "metric", "check", "status", "expected_here"]]
    display(table)
    for figure in paper["figures"]:
        display(Image(filename=figure, width=520))
