"""The claims ledger: what a paper claims, and whether our run reproduces it.

A paper's ``claims.yaml`` lists claims written down before the run, each with the
paper's own number and a check against one metric our notebooks compute (a key of the
paper's metrics.json, or ``timings.<key>`` for wall-clock measurements). This module
reads and checks that file and evaluates each claim against a run's metrics.
"""

from __future__ import annotations

import json
import math
import operator
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.paper import Paper

HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_CMP = re.compile(r"^\s*(<=|>=|<|>)\s*(-?[0-9.eE+-]+)\s*$")
_RANGE = re.compile(r"^\s*in\s*\[\s*(-?[0-9.eE+-]+)\s*,\s*(-?[0-9.eE+-]+)\s*\]\s*$")


def parse_check(check: str):
    """``"<= 0.5"`` or ``"in [0.55, 0.65]"`` -> a predicate on a number."""
    if m := _CMP.match(check):
        op, bound = _OPS[m.group(1)], float(m.group(2))
        return lambda x: op(x, bound)
    if m := _RANGE.match(check):
        lo, hi = float(m.group(1)), float(m.group(2))
        if lo > hi:
            raise ValueError(f"check {check!r}: empty range")
        return lambda x: lo <= x <= hi
    raise ValueError(f"check {check!r}: use '<op> number' (op one of < <= > >=) or 'in [lo, hi]'")


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    claim: str = Field(min_length=10)
    paper_value: str = Field(min_length=1)
    source: str = Field(min_length=2, description="table / figure / section of the paper")
    metric: str = Field(pattern=r"^(timings\.)?[A-Za-z0-9_]+$")
    check: str
    expected_at: list[Literal["smoke", "cpu", "gpu"]]
    note: str = ""

    @field_validator("check")
    @classmethod
    def _check_parses(cls, value: str) -> str:
        parse_check(value)
        return value


class ClaimsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    paper: str = Field(pattern=r"^\d{2}$")
    title: str
    authors: str
    venue: str
    arxiv: str = ""
    claims: list[Claim] = Field(min_length=1)

    @field_validator("claims")
    @classmethod
    def _unique_ids(cls, claims: list[Claim]) -> list[Claim]:
        ids = [c.id for c in claims]
        if len(ids) != len(set(ids)):
            raise ValueError(f"claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
        return claims


def load_claims(paper: Paper) -> ClaimsFile:
    path = paper.folder / "claims.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; every paper writes its claims down before the run")
    try:
        parsed = ClaimsFile.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    if parsed.paper != paper.number:
        raise ValueError(f"{path}: paper is {parsed.paper!r} but the folder is {paper.number!r}")
    return parsed


def load_run(paper: Paper) -> dict[str, Any]:
    """metrics.json with timings.json nested under ``timings``; {} if the paper never ran."""
    out: dict[str, Any] = {}
    metrics, timings = paper.folder / "metrics.json", paper.folder / "timings.json"
    if metrics.exists():
        out.update(json.loads(metrics.read_text()))
    if timings.exists():
        out["timings"] = json.loads(timings.read_text())
    return out


_ABSENT = object()  # a metric the run did not log (a null it logged is a measured "no value")


def lookup(run: dict[str, Any], metric: str, missing: Any = None) -> Any:
    node: Any = run
    for part in metric.split(".", 1) if metric.startswith("timings.") else [metric]:
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def evaluate(claim: Claim, run: dict[str, Any]) -> tuple[Any, str]:
    """(our value, status) for one claim. A metric logged as null (the run could not measure
    it, and said why in its output) is "not run"; one never logged is an error once the
    paper has run."""
    value = lookup(run, claim.metric, missing=_ABSENT)
    if value is None:
        return None, NOT_RUN
    if value is _ABSENT:
        if "run" in run:  # the paper ran, so a missing metric is a typo or a notebook bug
            have = sorted(k for k in run if k not in ("run", "timings")) + sorted(f"timings.{k}" for k in run.get("timings", {}))
            raise ValueError(f"claim {claim.id}: metric {claim.metric!r} is not among the run's metrics: {have}")
        return None, NOT_RUN
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"claim {claim.id}: metric {claim.metric} = {value!r} is not a finite number")
    return value, HOLDS if parse_check(claim.check)(value) else FAILS
