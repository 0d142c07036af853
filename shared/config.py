"""Parameters: compose (Hydra), load (params.yaml), override, validate.

The tree has four kinds of top-level keys: ``seed``, ``scale`` (the scale's global
settings), one section per shared artifact (``corpus``, ``tinylm``: validated by the
artifact module's ``Params``, see shared/artifacts.py) and one ``pNN`` section per
paper, validated by that paper's ``config.Params`` (pydantic). Every failure is a :class:`ParamError` whose message is
one line naming the key and what is allowed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.paper import Paper, all_papers, get_paper, import_paper
from shared.paths import CONF, PARAMS_FILE

SCALES = ("smoke", "cpu", "gpu")


class ParamError(ValueError):
    """A bad or unknown parameter; the message is one line."""


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["smoke", "cpu", "gpu"]
    device: Literal["cpu", "cuda", "auto"] = Field(description="cuda requires a GPU; auto picks cuda when present")


class Globals(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = Field(ge=0, le=2**31 - 1, description="papers use seed + i; numpy takes < 2**32")
    scale: Scale


def compose(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Compose pipelines/conf with Hydra overrides (``scale=cpu``, ``p06.n_dim=50``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ParamError(_hydra_message(exc, overrides)) from None
    return OmegaConf.to_container(cfg, resolve=True)


def _hydra_message(exc: Exception, overrides) -> str:
    text = str(exc)
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if "/" not in key and "." not in key and f"'{key}/{value}'" in text:
            group = CONF / key
            options = sorted(p.stem for p in group.glob("*.yaml") if p.stem != "base")
            return f"{key}: {value!r} is not an option; allowed: {', '.join(options)}"
        if f"'{key}'" in text and ("not in struct" in text or "Could not override" in text):
            section, _, _ = key.rpartition(".")
            allowed = _allowed_keys(section)
            where = section or "the top level"
            return f"{key}: unknown key" + (f"; allowed in {where}: {', '.join(allowed)}" if allowed else "")
    return " ".join(text.split())


def _allowed_keys(section: str) -> list[str]:
    """The keys a section may hold, from the models (for a hint in an error message)."""
    parts = section.split(".") if section else []
    from shared import artifacts

    if not parts:
        return sorted({*Globals.model_fields, *artifacts.MODULES, *(p.key for p in all_papers())})
    papers = {p.key: p for p in all_papers()}
    if parts[0] == "scale":
        root = Scale
    elif parts[0] in artifacts.MODULES:
        root = artifacts.params_model(parts[0])
    else:
        root = params_model(papers[parts[0]]) if parts[0] in papers else None
    model = _nested_model(root, parts[1:])
    return sorted(model.model_fields) if model is not None else []


def _nested_model(model: type[BaseModel] | None, path) -> type[BaseModel] | None:
    """The model of a nested section (``path`` of field names), or None if it is not one."""
    import typing

    parts, annotation = list(path), None
    while parts and model is not None:
        field = model.model_fields.get(str(parts.pop(0)))
        annotation = field.annotation if field is not None else None
        if typing.get_origin(annotation) is dict and parts:  # dict[str, Model]: skip the key
            annotation = typing.get_args(annotation)[1]
            parts.pop(0)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def load(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path}: missing; compose it with `python -m pipelines.params` (or `make params`)")
    with path.open() as fh:
        return yaml.safe_load(fh) or {}


def apply_overrides(section: dict[str, Any], overrides: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Set dotted keys in a copy of ``section``; a key must already exist."""
    import copy

    if not isinstance(overrides, dict):
        raise ParamError(
            f"overrides: a dict of dotted keys to values is expected, e.g. {{'n_dim': 200}} (got {overrides!r})"
        )
    out = copy.deepcopy(section)
    for dotted, value in overrides.items():
        node, parts = out, str(dotted).split(".")
        for depth, part in enumerate(parts):
            where = ".".join([prefix, *parts[:depth]])
            if isinstance(node, list):  # a list element by index, as Hydra's `key.0=` does
                if not (part.isdigit() and int(part) < len(node)):
                    raise ParamError(f"{prefix}.{dotted}: {where} is a list of {len(node)}; use an index below it")
                part = int(part)
            elif not isinstance(node, dict) or part not in node:
                allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
                raise ParamError(f"{prefix}.{dotted}: unknown key; allowed in {where}: {allowed}")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return out


def params_model(paper: Paper) -> type[BaseModel]:
    import_paper(paper.number)
    try:
        module = importlib.import_module(f"{paper.package}.config")
    except ModuleNotFoundError as exc:
        raise ParamError(f"{paper.key}: {paper.folder}/config.py is missing ({exc})") from None
    return module.Params


def validate_section(model: type[BaseModel], values: Any, prefix: str) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ParamError(_one_line(exc, model, prefix)) from None


def _one_line(exc: ValidationError, model: type[BaseModel], prefix: str) -> str:
    err = exc.errors()[0]
    loc = ".".join([prefix, *map(str, err["loc"])]) if prefix else ".".join(map(str, err["loc"]))
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        parent = _nested_model(model, err["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent is not None else "?"
        return f"{loc}: unknown key; allowed: {allowed}{more}"
    if err["type"] == "missing":
        return f"{loc}: missing{more}"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if not err["loc"] or isinstance(value, (dict, list)) and len(repr(value)) > 80:
        return f"{loc}: {message}{more}"  # a whole section as input: the message says what is wrong
    return f"{loc}: {message} (got {value!r}){more}"


def validate(params: dict[str, Any]) -> dict[str, BaseModel]:
    """Validate the whole tree; return {"globals": Globals, "corpus": Params, "p06": Params, ...}."""
    from shared import artifacts

    papers = {p.key: p for p in all_papers()}
    known = {"seed", "scale", *artifacts.MODULES, *papers}
    for key in params:
        if key not in known:
            raise ParamError(f"{key}: unknown top-level key; allowed: {', '.join(sorted(known))}")
    out: dict[str, BaseModel] = {
        "globals": validate_section(Globals, {k: params.get(k) for k in ("seed", "scale")}, "")
    }
    for name in artifacts.MODULES:
        if name not in params:
            raise ParamError(f"{name}: missing; add `- {name}: ${{scale}}` to pipelines/conf/config.yaml")
        out[name] = validate_section(artifacts.params_model(name), params[name], name)
    for key, paper in papers.items():
        if key not in params:
            raise ParamError(f"{key}: missing; add `- {key}: ${{scale}}` to pipelines/conf/config.yaml")
        out[key] = validate_section(params_model(paper), params[key], key)
    return out


def paper_params(ident: str | int, params: dict[str, Any], overrides: dict[str, Any] | None = None):
    """The validated (globals, Params) of one paper, with dotted ``overrides`` applied."""
    paper = get_paper(ident)
    if paper.key not in params:
        raise ParamError(f"{paper.key}: missing from params; recompose with `python -m pipelines.params`")
    section = apply_overrides(params[paper.key], overrides or {}, paper.key)
    glob = validate_section(Globals, {k: params.get(k) for k in ("seed", "scale")}, "")
    return glob, validate_section(params_model(paper), section, paper.key)
