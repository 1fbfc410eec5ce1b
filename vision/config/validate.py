"""Validate a composed config before any work starts.

Two checks, both naming the offending key:
- the root keys against the recipe's schema (unknown key, wrong type);
- every ``_target_`` node against the signature of the callable it names: a key the callable
  does not accept, or a value whose type contradicts the parameter's annotation, is an error.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import inspect
import types
import typing
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from vision.errors import ConfigError


def _locate(path: str, key: str) -> Any:
    # longest importable module prefix, then attributes (classes nested in modules)
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for a in parts[i:]:
                obj = getattr(obj, a)
            return obj
        except AttributeError:
            break
    raise ConfigError(f"{key}._target_: cannot import {path!r}")


def _type_ok(value: Any, ann: Any) -> bool:
    if ann is inspect.Parameter.empty or ann is Any or value is None and _allows_none(ann):
        return True
    origin = typing.get_origin(ann)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(ann))
    if origin in (typing.Literal,):
        return value in typing.get_args(ann)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is bool:
        return isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or ann in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin in (dict, collections.abc.Mapping) or ann is dict:
        return isinstance(value, dict)
    return True  # classes, callables, protocols: checked when instantiated


def _allows_none(ann: Any) -> bool:
    return ann is None or type(None) in typing.get_args(ann)


def _check_target(node: DictConfig, key: str) -> None:
    target = node.get("_target_")
    fn = _locate(str(target), key)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # noqa: BLE001 - unresolved forward references: skip type checks
        hints = {}
    for k in node.keys():
        k = str(k)
        if k.startswith("_") and k.endswith("_"):
            continue
        if k not in params:
            if var_kw:
                continue
            accepted = [p for p in params if p not in ("self", "args", "kwargs")]
            raise ConfigError(f"unknown config key '{key}.{k}': {target} accepts {', '.join(accepted)}")
        if OmegaConf.is_missing(node, k):
            continue
        raw = node._get_node(k)
        if isinstance(raw, DictConfig) and "_target_" in raw:
            continue
        value = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, (DictConfig, ListConfig)) else node[k]
        if isinstance(value, (DictConfig, ListConfig)):  # an interpolation that resolved to a container
            value = OmegaConf.to_container(value, resolve=True)
        ann = hints.get(k, params[k].annotation)
        if not _type_ok(value, ann):
            raise ConfigError(f"config key '{key}.{k}' = {value!r} has the wrong type: "
                              f"{target} expects {getattr(ann, '__name__', ann)}")


def _walk(node: Any, key: str) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_target(node, key)
        for k in node.keys():
            if not OmegaConf.is_missing(node, k):
                _walk(node._get_node(k), f"{key}.{k}" if key else str(k))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _walk(node._get_node(i), f"{key}[{i}]")


def _check_schema(cfg: DictConfig, schema: type) -> None:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for k in cfg.keys():
        k = str(k)
        if k == "hydra":
            continue
        if k not in fields:
            raise ConfigError(f"unknown config key '{k}' (known top-level keys: {', '.join(sorted(fields))})")
        if OmegaConf.is_missing(cfg, k):
            raise ConfigError(f"config key '{k}' is required but missing (set it, e.g. {k}=...)")
        raw = cfg._get_node(k)
        value = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, (DictConfig, ListConfig)) else cfg[k]
        if not _type_ok(value, hints[k]):
            raise ConfigError(f"config key '{k}' = {value!r} has the wrong type: expected {hints[k]}")
    for name, f in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in cfg:
            raise ConfigError(f"config key '{name}' is required but missing")


def validate(cfg: DictConfig, schema: type | None = None) -> None:
    """Raise ConfigError naming the first bad key; resolves interpolations on the way."""
    if schema is not None:
        _check_schema(cfg, schema)
    for k in cfg.keys():
        if str(k) != "hydra":
            _walk(cfg._get_node(k), str(k))
