"""What a sweep searches: ``sweeps/<dataset>.yaml`` over ``sweeps/default.yaml``, strictly checked.

A variant of a dataset's plan (``sweeps/<dataset>/<variant>.yaml``, chosen with ``--plan``) is
merged over it in turn and states only what it changes: a second reading of a paper, say.

A plan names the methods, the search space (SPEC.md section 4: lambda log-uniform in
[1e-4, 1e1], hidden in {128, 256, 512, 1024}), the trials per method, the seed of the search
split, the seeds of the final runs (new splits) and the protocol: every other
:class:`~benchmark.config.TrainConfig` field, fixed for the whole study. ``method_protocol``
changes protocol fields for one method (a paper's STL trained without penalty, say).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from .config import TrainConfig

SWEEP_KEYS = (
    "methods", "trials", "search_seed", "final_seeds", "search", "protocol", "method_protocol", "method_params", "pruner",
)
SEARCHED_FIELDS = ("lam", "hidden", "lr")
PLAN_FIELDS = ("dataset", "method", "seed", "method_params")  # set by the sweep, never by the protocol


def sweeps_dir() -> Path:
    """``sweeps/`` in the working directory, else the one beside the package (editable install)."""
    local = Path("sweeps")
    return local if local.is_dir() else Path(__file__).resolve().parents[1] / "sweeps"


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) else value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(values) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid: {', '.join(SWEEP_KEYS)}")
    return values


@dataclass(frozen=True)
class SearchDimension:
    """One searched field: a float range (log-uniform when ``log``) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @classmethod
    def parse(cls, name: str, spec: Any) -> SearchDimension:
        if name not in SEARCHED_FIELDS:
            raise ValueError(f"search: cannot search {name!r}; searchable: {', '.join(SEARCHED_FIELDS)}")
        if isinstance(spec, list):
            if not spec:
                raise ValueError(f"search.{name}: empty list of choices")
            return cls(name, choices=tuple(spec))
        if isinstance(spec, Mapping) and set(spec) <= {"low", "high", "log"} and {"low", "high"} <= set(spec):
            low, high = float(spec["low"]), float(spec["high"])
            if not 0 < low < high if spec.get("log") else not low < high:
                raise ValueError(f"search.{name}: need low < high (and low > 0 when log), got {spec}")
            return cls(name, low=low, high=high, log=bool(spec.get("log", False)))
        raise ValueError(f"search.{name}: give a list of choices or {{low, high, log}}, got {spec!r}")

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution :meth:`suggest` draws from (a restored trial is stored with it)."""
        if self.choices:
            return CategoricalDistribution(list(self.choices))
        return FloatDistribution(self.low, self.high, log=self.log)

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class SweepPlan:
    dataset: str
    methods: tuple[str, ...]
    trials: int
    search_seed: int
    final_seeds: tuple[int, ...]
    search: tuple[SearchDimension, ...]
    protocol: Mapping[str, Any]
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=dict)
    method_protocol: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        dataset: str,
        directory: Path | None = None,
        methods: str | None = None,
        trials: int | None = None,
        final_seeds: tuple[int, ...] | None = None,
        protocol: Mapping[str, Any] | None = None,
        variant: str | None = None,
    ) -> SweepPlan:
        """The dataset's plan (``default.yaml`` merged with ``<dataset>.yaml``, then with the
        ``variant``'s ``<dataset>/<variant>.yaml``), then the overrides."""
        from .data import dataset_source
        from .methods import method_names

        dataset_source(dataset)  # an unknown dataset names the valid ones before anything runs
        directory = directory or sweeps_dir()
        values = _read_yaml(directory / "default.yaml")
        if (directory / f"{dataset}.yaml").exists():
            values = _merge(values, _read_yaml(directory / f"{dataset}.yaml"))
        if variant:
            variant_file = directory / dataset / f"{variant}.yaml"
            if not variant_file.exists():
                known = sorted(p.stem for p in (directory / dataset).glob("*.yaml"))
                raise ValueError(f"no plan {variant!r} for {dataset} ({variant_file}); "
                                 f"variants of {dataset}: {', '.join(known) or 'none'}")
            values = _merge(values, _read_yaml(variant_file))
        method_list = methods or values.get("methods", "all")
        if method_list == "all":
            chosen = tuple(method_names())
        else:
            chosen = tuple(m.strip() for m in (method_list.split(",") if isinstance(method_list, str) else method_list))
            unknown = [m for m in chosen if m not in method_names()]
            if unknown:
                raise ValueError(f"unknown method(s) {unknown}; valid: all, {', '.join(method_names())}")
        protocol_values = {**values.get("protocol", {}), **(protocol or {})}
        searched = values.get("search") or {}
        fixed = sorted(set(protocol_values) & {*PLAN_FIELDS, *searched})
        if fixed:
            raise ValueError(
                f"protocol cannot fix {fixed}: the sweep sets them (dataset, method, searched fields; "
                "seeds via search_seed/final_seeds; method_params at the top level)"
            )
        method_protocol = values.get("method_protocol") or {}
        strangers = sorted(set(method_protocol) - set(method_names()))
        if strangers:
            raise ValueError(f"method_protocol: unknown method(s) {strangers}; valid: {', '.join(method_names())}")
        for method, overrides in method_protocol.items():
            clash = sorted(set(overrides) & {*PLAN_FIELDS, *searched, "train_ratio"})
            if clash:
                raise ValueError(f"method_protocol.{method} cannot set {clash}: the sweep or the study sets them")
        plan = cls(
            dataset=dataset,
            methods=chosen,
            trials=int(trials if trials is not None else values.get("trials", 20)),
            search_seed=int(values.get("search_seed", 0)),
            final_seeds=tuple(int(s) for s in (final_seeds or values.get("final_seeds", (1, 2, 3, 4, 5)))),
            search=tuple(SearchDimension.parse(name, spec) for name, spec in (values.get("search") or {}).items()),
            protocol=protocol_values,
            method_params=values.get("method_params") or {},
            pruner=values.get("pruner") or {},
            method_protocol=method_protocol,
        )
        plan.check()
        return plan

    @property
    def fixed(self) -> bool:
        """A plan without a search (``search: null``, ``trials: 0``): the finals run the protocol as
        given, one per seed. Reproductions of a paper's fixed setting use it (Omniglot at 10% has
        no validation part to search on)."""
        return not self.search

    def check(self) -> None:
        if not self.final_seeds:
            raise ValueError("a sweep needs at least one final seed")
        if self.fixed != (self.trials == 0):
            raise ValueError(f"trials: 0 goes with search: null (a fixed plan), and a search needs trials >= 1 "
                             f"(got trials {self.trials} and {len(self.search)} searched field(s))")
        if len(set(self.final_seeds)) != len(self.final_seeds) or self.search_seed in self.final_seeds:
            raise ValueError(
                f"final seeds must be distinct and differ from the search seed {self.search_seed} "
                f"(each final run is a new split), got {list(self.final_seeds)}"
            )
        for ratio in self.train_ratios:
            config = self.config(self.methods[0], ratio, seed=self.search_seed)
            if config.val_ratio == 0 and not self.fixed:
                raise ValueError("a search selects on validation error: protocol.val_ratio must be > 0")
        for method in self.method_protocol:
            if method in self.methods:
                self.config(method, self.train_ratios[0], seed=self.search_seed)  # unknown fields fail here
        for method, params in self.method_params.items():
            if method in self.methods:
                from .methods import method_class

                method_class(method).holdout_ratio(params)  # checks the parameter names early

    @property
    def train_ratios(self) -> tuple[float, ...]:
        """One study per train ratio: ``protocol.train_ratio`` may be a number or a list."""
        ratios = self.protocol.get("train_ratio", TrainConfig.train_ratio)
        return tuple(float(r) for r in (ratios if isinstance(ratios, list) else [ratios]))

    def config(self, method: str, train_ratio: float, seed: int, **searched: Any) -> TrainConfig:
        values = {**self.protocol, **self.method_protocol.get(method, {}), "train_ratio": train_ratio}
        return TrainConfig.from_dict(
            {**values, **searched, "dataset": self.dataset, "method": method, "seed": seed,
             "method_params": dict(self.method_params.get(method, {}))}
        )

    def study_name(self, method: str, train_ratio: float) -> str:
        """``dataset/method/r<ratio>/<hash>``: the hash covers everything the trials depend on.

        Changing epochs, the search space or a method parameter starts a new study; asking for
        more trials or more final seeds continues the same one.
        """
        identity = {
            "protocol": self.config(method, train_ratio, seed=self.search_seed).to_dict(),
            "search": [vars(d) for d in self.search],
            "pruner": dict(self.pruner),
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=list).encode()).hexdigest()[:8]
        return f"{self.dataset}/{method}/r{train_ratio:g}/{digest}"
