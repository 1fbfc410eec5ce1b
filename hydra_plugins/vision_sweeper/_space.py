"""The search space: Hydra override syntax (as hydra-optuna-sweeper reads it) to Optuna distributions, and
trial parameters back to override strings."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json)

SCALARS = (bool, int, float)


class SearchSpaceError(ValueError):
    """A search-space entry the sweeper cannot turn into an Optuna distribution."""


def _choice(value: Any) -> Any:
    """A choice as Optuna stores it: numbers and booleans as they are, anything else as its override text."""
    if value is None or isinstance(value, SCALARS):
        return value
    return Override._get_value_element_as_str(value)


def to_override_value(value: Any) -> str:
    """Inverse of :func:`_choice`: the text after ``key=`` for a trial's parameter value."""
    if isinstance(value, str):
        return value  # already override text
    return Override._get_value_element_as_str(value)


def _distribution(ov: Override) -> BaseDistribution:
    key = ov.get_key_element()
    if ov.is_choice_sweep():
        values = list(ov.sweep_iterator())
        return CategoricalDistribution([_choice(v) for v in values])
    if ov.is_range_sweep():
        values = list(ov.sweep_iterator())
        if not values:
            raise SearchSpaceError(f"{key}: empty range")
        step = values[1] - values[0] if len(values) > 1 else 1
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and step > 0 \
                and not ov.value().shuffle:
            return IntDistribution(values[0], values[-1], step=step)  # ordered: TPE models it as a number
        return CategoricalDistribution([_choice(v) for v in values])
    if ov.is_interval_sweep():
        iv = ov.value()
        tags = set(iv.tags or ())
        unknown = tags - {"log", "int"}
        if unknown:
            raise SearchSpaceError(f"{key}: unknown interval tag(s) {sorted(unknown)} (known: log, int)")
        low, high = float(iv.start), float(iv.end)
        if not low < high:
            raise SearchSpaceError(f"{key}: interval({iv.start}, {iv.end}) needs start < end")
        if "log" in tags and low <= 0:
            raise SearchSpaceError(f"{key}: a log interval needs start > 0, got {iv.start}")
        if "int" in tags:
            return IntDistribution(int(low), int(high), log="log" in tags)
        return FloatDistribution(low, high, log="log" in tags)
    raise SearchSpaceError(f"{key}: {ov.input_line!r} is not a sweep the Optuna sweeper knows "
                           f"(choice, a,b, range, interval, tag(log|int, interval))")


def parse(entries: Iterable[str], config_loader: Any = None) -> tuple[dict[str, BaseDistribution], list[str]]:
    """``key=value`` strings -> (search space by override key, fixed overrides in order).

    A later entry for the same key replaces an earlier one (command-line arguments follow ``params``).
    """
    parser = OverridesParser.create(config_loader=config_loader)
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for ov in parser.parse_overrides(list(entries)):
        key = ov.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if ov.is_sweep_override():
            space[key] = _distribution(ov)
        else:
            fixed[key] = ov.input_line or f"{key}={ov.get_value_element_as_str()}"
    return space, list(fixed.values())


def params_entries(params: Mapping[str, Any] | None) -> list[str]:
    """``hydra.sweeper.params`` (key -> override value text) as ``key=value`` strings."""
    return [f"{k}={v}" for k, v in (params or {}).items()]


def grid_choices(space: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The grid of a search space (every entry must be discrete: choice, a,b, range)."""
    grid = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            grid[key] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            grid[key] = list(range(d.low, d.high + 1, d.step))
        else:
            raise SearchSpaceError(f"{key}: the grid sampler needs discrete values (choice(...), a,b or range(...)), "
                                   f"not {describe(d)}")
    return grid


def describe(d: BaseDistribution) -> str:
    """A short readable form of a distribution (MLflow params of the parent run)."""
    if isinstance(d, CategoricalDistribution):
        return "choice(" + ", ".join(to_override_value(c) for c in d.choices) + ")"
    if isinstance(d, IntDistribution):
        s = f"int({d.low}, {d.high}" + (f", step={d.step}" if d.step != 1 else "") + ")"
        return f"log {s}" if d.log else s
    if isinstance(d, FloatDistribution):
        s = f"interval({d.low:g}, {d.high:g}" + (f", step={d.step:g}" if d.step else "") + ")"
        return f"log {s}" if d.log else s
    return repr(d)


def fingerprint(space: Mapping[str, BaseDistribution], fixed: Iterable[str], direction: str) -> str:
    """A short hash naming a study by what it searches (so the same command finds its study again)."""
    doc = {"space": {k: json.loads(distribution_to_json(d)) for k, d in sorted(space.items())},
           "fixed": sorted(fixed), "direction": direction}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:8]


def trial_overrides(params: Mapping[str, Any], fixed: Iterable[str]) -> list[str]:
    """The overrides of one trial: the fixed ones, then its sampled parameters."""
    return [*fixed, *(f"{k}={to_override_value(v)}" for k, v in params.items())]
