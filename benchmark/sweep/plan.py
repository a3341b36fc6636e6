"""What a sweep searches: ``sweeps/<dataset>.yaml`` over ``sweeps/default.yaml``, strictly checked.

A variant of a dataset's plan (``sweeps/<dataset>/<variant>.yaml``, chosen with ``--plan``) is
merged over it in turn and states only what it changes: a second reading of a paper, say.

A plan names the methods, the search space (SPEC.md section 4: lambda log-uniform in
[1e-4, 1e1], hidden in {128, 256, 512, 1024}) and a method's own ranges where it needs wider
ones (``method_search``), the trials per method and how many of them TPE draws at random before
it guides (``sampler``), the seeds of the search splits (the objective is the mean validation
error over them), the seeds of the final runs (new splits) and the protocol: every other
:class:`~benchmark.config.TrainConfig` field, fixed for the whole study. ``method_protocol``
changes protocol fields for one method (a paper's STL trained without penalty, say).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from ..config import TrainConfig
from ..data import dataset_name
from ..methods import method_class, method_names, registration_order, resolve_config
from ..nets import NetworkSpec
from ..records import PROTOCOL_VERSION, edge_of, search_edges, write_json_atomic

SWEEP_KEYS = (
    "methods", "trials", "search_seeds", "search_seeds_by_ratio", "final_seeds", "search", "method_search", "sampler", "protocol",
    "method_protocol", "method_params", "pruner", "launcher", "paired_with",
)
SAMPLER_KEYS = ("n_startup_trials",)
SEARCHED_FIELDS = ("lam", "hidden", "lr")
PLAN_FIELDS = ("dataset", "method", "seed", "method_params")  # set by the sweep, never by the protocol


def sweeps_dir() -> Path:
    """``sweeps/`` in the working directory, else the one beside the package (editable install)."""
    local = Path("sweeps")
    return local if local.is_dir() else Path(__file__).resolve().parents[2] / "sweeps"


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) else value
    return merged


def _variants_of(directory: Path, dataset: str) -> list[str]:
    """The names of ``dataset``'s plan variants (``<directory>/<dataset>/<variant>.yaml``)."""
    return sorted(p.stem for p in (directory / dataset).glob("*.yaml"))


def paired_variant(dataset: str, variant: str, directory: Path | None = None) -> str | None:
    """The other variant of ``dataset`` that ``variant``'s plan names in ``paired_with``: its
    leaderboard pairs each method with that variant's run as well as with the main board's (the
    same weighting at another budget, say). None where the plan names none or no such plan exists."""
    plan_file = (directory or sweeps_dir()) / dataset / f"{variant}.yaml"
    return _read_yaml(plan_file).get("paired_with") if plan_file.exists() else None


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

    def edge(self, value: Any) -> str | None:
        """"low" or "high" when ``value`` sits at that end of the range, else None (:func:`edge_of`)."""
        return edge_of(self.describe(), value)

    def describe(self) -> dict[str, Any]:
        """The dimension as plain data, as a record stores it (:meth:`parse` reads it back)."""
        return {"choices": list(self.choices)} if self.choices else {"low": self.low, "high": self.high, "log": self.log}

    @classmethod
    def from_description(cls, name: str, description: Mapping[str, Any]) -> SearchDimension:
        return cls.parse(name, list(description["choices"]) if "choices" in description else dict(description))

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution :meth:`suggest` draws from (a restored trial is stored with it)."""
        if self.choices:
            return CategoricalDistribution(list(self.choices))
        return FloatDistribution(self.low, self.high, log=self.log)

    def suggest(self, trial: Any) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def edges(search: Sequence[SearchDimension], values: Mapping[str, Any]) -> list[str]:
    """``["lam low", ...]``: the searched values of ``values`` at an edge of their range."""
    return search_edges({d.name: d.describe() for d in search}, values)


@dataclass(frozen=True)
class SweepPlan:
    dataset: str
    methods: tuple[str, ...]
    trials: int
    search_seeds: tuple[int, ...]  # the search splits at every train ratio not in search_seeds_by_ratio
    final_seeds: tuple[int, ...]
    search: tuple[SearchDimension, ...]
    protocol: Mapping[str, Any]
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=dict)
    method_protocol: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    method_search: Mapping[str, tuple[SearchDimension, ...]] = field(default_factory=dict)
    n_startup_trials: int = 6  # TPE's random trials before it guides (at most trials - 1)
    # Methods left out because they compute the same penalty as another: method -> the one that runs.
    equal_to: Mapping[str, str] = field(default_factory=dict)
    search_seeds_by_ratio: Mapping[float, tuple[int, ...]] = field(default_factory=dict)
    # What each scheduler job asks for (benchmark.sweep.launcher.JobResources); not part of any study.
    launcher: Mapping[str, Any] = field(default_factory=dict)

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
        # An unknown dataset names the valid ones before anything runs. A folder dataset's plan is
        # the one named like its folder, if any, else default.yaml alone.
        name = dataset_name(dataset)
        directory = directory or sweeps_dir()
        values = _read_yaml(directory / "default.yaml")
        if (directory / f"{name}.yaml").exists():
            values = _merge(values, _read_yaml(directory / f"{name}.yaml"))
        if variant:
            variant_file = directory / name / f"{variant}.yaml"
            if not variant_file.exists():
                raise ValueError(f"no plan {variant!r} for {name} ({variant_file}); "
                                 f"variants of {name}: {', '.join(_variants_of(directory, name)) or 'none'}")
            values = _merge(values, _read_yaml(variant_file))
            paired = values.get("paired_with")
            if paired is not None and (paired == variant or not (directory / name / f"{paired}.yaml").exists()):
                raise ValueError(f"{variant_file}: paired_with {paired!r} is not another plan of {name}; "
                                 f"variants of {name}: {', '.join(_variants_of(directory, name))}")
        elif values.get("paired_with") is not None:
            raise ValueError("paired_with belongs to a plan variant (sweeps/<dataset>/<variant>.yaml): it names "
                             "another variant its leaderboard is also paired with")
        method_list = methods or values.get("methods", "all")
        if method_list == "all":  # the baselines first, then by name
            chosen = tuple(sorted(method_names(), key=lambda m: not method_class(m).reference))
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
                "seeds via search_seeds/final_seeds; method_params at the top level)"
            )
        method_protocol = values.get("method_protocol") or {}
        strangers = sorted(set(method_protocol) - set(method_names()))
        if strangers:
            raise ValueError(f"method_protocol: unknown method(s) {strangers}; valid: {', '.join(method_names())}")
        for method, overrides in method_protocol.items():
            clash = sorted(set(overrides) & {*PLAN_FIELDS, *searched, "train_ratio"})
            if clash:
                raise ValueError(f"method_protocol.{method} cannot set {clash}: the sweep or the study sets them")
        method_search = values.get("method_search") or {}
        strangers = sorted(set(method_search) - set(method_names()))
        if strangers:
            raise ValueError(f"method_search: unknown method(s) {strangers}; valid: {', '.join(method_names())}")
        sampler = values.get("sampler") or {}
        if set(sampler) - set(SAMPLER_KEYS):
            raise ValueError(f"sampler: unknown key(s) {sorted(set(sampler) - set(SAMPLER_KEYS))}; valid: {', '.join(SAMPLER_KEYS)}")
        n_trials = int(trials if trials is not None else values.get("trials", 20))
        search_seeds = values.get("search_seeds", [0])
        plan = cls(
            dataset=dataset,
            methods=chosen,
            trials=n_trials,
            search_seeds=tuple(int(s) for s in (search_seeds if isinstance(search_seeds, list) else [search_seeds])),
            final_seeds=tuple(int(s) for s in (final_seeds or values.get("final_seeds", (1, 2, 3, 4, 5)))),
            search=tuple(SearchDimension.parse(name, spec) for name, spec in searched.items()),
            protocol=protocol_values,
            method_params=values.get("method_params") or {},
            pruner=values.get("pruner") or {},
            method_protocol=method_protocol,
            # A method's ranges replace the plan's for the fields the plan searches; a field the
            # plan fixes (or a fixed plan, which searches nothing) stays fixed for it too.
            method_search={
                method: tuple(SearchDimension.parse(name, (dims or {}).get(name, spec)) for name, spec in searched.items())
                for method, dims in method_search.items()
            },
            # With no more trials than random ones TPE never guides (8 trials at Optuna's default 10
            # made the Office-Caltech "TPE" search random): at least the last trial is guided.
            n_startup_trials=max(0, min(int(sampler.get("n_startup_trials", 6)), n_trials - 1)),
            search_seeds_by_ratio={float(ratio): tuple(int(s) for s in seeds)
                                   for ratio, seeds in (values.get("search_seeds_by_ratio") or {}).items()},
            launcher=values.get("launcher") or {},
        )
        plan.check()
        return plan

    @property
    def fixed(self) -> bool:
        """A plan without a search (``search: null``, ``trials: 0``): the finals run the protocol as
        given, one per seed. Reproductions of a paper's fixed setting use it (Omniglot at 10% has
        no validation part to search on)."""
        return not self.search

    @property
    def search_seed(self) -> int:
        """The first search split's seed: the split the pruner watches."""
        return self.search_seeds[0]

    def search_seeds_at(self, train_ratio: float) -> tuple[int, ...]:
        """The search splits at ``train_ratio``: more where the validation part is small."""
        return self.search_seeds_by_ratio.get(float(train_ratio), self.search_seeds)

    def weighs_lambda(self, method: str) -> bool:
        """Whether lambda weighs anything in ``method``'s loss under this plan's layering."""
        layers = self.config(method, self.train_ratios[0], seed=self.search_seed).layers
        return method_class(method).weighs_lambda(layers)

    def search_space(self, method: str) -> tuple[SearchDimension, ...]:
        """The dimensions ``method`` searches: the plan's, with the method's own ranges over them,
        less lambda where it weighs nothing (every value would train the same network)."""
        space = self.method_search.get(method, self.search)
        return space if self.weighs_lambda(method) else tuple(d for d in space if d.name != "lam")

    def grid_size(self, method: str) -> int | None:
        """How many configurations ``method``'s search space holds where every dimension is a list
        of choices (1 for an empty space); None where one is a range."""
        space = self.search_space(method)
        return None if any(not d.choices for d in space) else math.prod(len(d.choices) for d in space)

    def exhaustive(self, method: str) -> bool:
        """Whether ``method``'s search visits every configuration of a finite space once (a grid
        no larger than the trial budget) instead of drawing from it with TPE, which repeats points."""
        size = self.grid_size(method)
        return size is not None and 1 < size <= self.trials

    def search_budget(self, method: str) -> int:
        """The search trials of ``method``: the plan's, or the size of a smaller finite space."""
        size = self.grid_size(method)
        return self.trials if size is None else min(self.trials, size)

    def check(self) -> None:
        if not self.final_seeds:
            raise ValueError("a sweep needs at least one final seed")
        for seeds in (self.search_seeds, *self.search_seeds_by_ratio.values()):
            if not seeds or len(set(seeds)) != len(seeds) or seeds[0] != self.search_seed:
                raise ValueError(f"search seeds must be distinct, at least one, and start with the plan's first "
                                 f"search seed {self.search_seed} (its split names the studies), got {list(seeds)}")
        searched_seeds = set(self.search_seeds).union(*self.search_seeds_by_ratio.values())
        if self.fixed != (self.trials == 0):
            raise ValueError(f"trials: 0 goes with search: null (a fixed plan), and a search needs trials >= 1 "
                             f"(got trials {self.trials} and {len(self.search)} searched field(s))")
        if len(set(self.final_seeds)) != len(self.final_seeds) or searched_seeds & set(self.final_seeds):
            raise ValueError(
                f"final seeds must be distinct and differ from the search seeds {sorted(searched_seeds)} "
                f"(each final run is a new split), got {list(self.final_seeds)}"
            )
        strangers = sorted(set(self.method_params) - set(method_names()))
        if strangers:
            raise ValueError(f"method_params: unknown method(s) {strangers}; valid: {', '.join(method_names())}")
        for method in self.methods:
            try:  # against the method's declared parameters, before any compute
                method_class(method).resolve_parameters(self.method_params.get(method, {}))
            except ValueError as error:
                raise ValueError(f"method_params.{method}: {error}") from None
            self.config(method, self.train_ratios[0], seed=self.search_seed)  # method_protocol's fields
        for ratio in self.train_ratios:
            config = self.config(self.methods[0], ratio, seed=self.search_seed)
            if config.val_ratio == 0 and not self.fixed:
                raise ValueError("a search selects on validation error: protocol.val_ratio must be > 0")

    @property
    def dataset_name(self) -> str:
        """The name studies and records file the dataset under (a folder dataset's folder name)."""
        return dataset_name(self.dataset)

    @property
    def train_ratios(self) -> tuple[float, ...]:
        """One study per train ratio: ``protocol.train_ratio`` may be a number or a list."""
        ratios = self.protocol.get("train_ratio", TrainConfig.train_ratio)
        return tuple(float(r) for r in (ratios if isinstance(ratios, list) else [ratios]))

    def config(self, method: str, train_ratio: float, seed: int, **searched: Any) -> TrainConfig:
        values = {**self.protocol, **self.method_protocol.get(method, {}), "train_ratio": train_ratio}
        config = resolve_config(TrainConfig.from_dict(
            {**values, **searched, "dataset": self.dataset, "method": method, "seed": seed,
             "method_params": dict(self.method_params.get(method, {}))}
        ))
        # Where lambda weighs nothing the record says so (0) rather than keep an inert value.
        return config if method_class(method).weighs_lambda(config.layers) else dataclasses.replace(config, lam=0.0)

    def with_coincidences(self, spec: NetworkSpec) -> SweepPlan:
        """The plan with ``equal_to`` set: each method whose training objective equals an earlier
        registered one's on a network of ``spec`` (the same protocol, search space and penalty on
        every layer, decided from the flattenings, not from names; e.g. Tucker, TR with d = 2 and
        GTTN-a on a 3-way tensor) maps to that method, which alone runs."""
        import torch

        first: dict[Any, str] = {}
        equal_to: dict[str, str] = {}
        for method in sorted(self.methods, key=registration_order):
            config = self.config(method, self.train_ratios[0], seed=self.search_seed)
            with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
                signature = method_class(method)(spec, config, [f"t{i}" for i in range(spec.n_tasks)]).penalty_signature()
            if signature is None:
                continue
            protocol = {k: v for k, v in config.to_dict().items() if k not in ("method", "method_params")}
            key = (signature, json.dumps(protocol, sort_keys=True, default=list), repr(self.search_space(method)))
            if key in first:
                equal_to[method] = first[key]
            else:
                first[key] = method
        return dataclasses.replace(self, equal_to=equal_to)

    @property
    def running_methods(self) -> tuple[str, ...]:
        """The plan's methods less those equal to another (``equal_to``), in plan order."""
        return tuple(m for m in self.methods if m not in self.equal_to)

    def study_name(self, method: str, train_ratio: float) -> str:
        """``dataset/method/r<ratio>/<hash>``: the hash covers everything the trials depend on.

        Changing epochs, the search space or a method parameter starts a new study; asking for
        more trials or more final seeds continues the same one.
        """
        # By the dataset's name, so machines that keep a folder dataset at different paths share its studies.
        identity = {
            "protocol": {**self.config(method, train_ratio, seed=self.search_seed).to_dict(), "dataset": self.dataset_name},
            "search": [vars(d) for d in self.search_space(method)],
            "pruner": dict(self.pruner),
            "protocol_version": PROTOCOL_VERSION,
            "search_seeds": list(self.search_seeds_at(train_ratio)),
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=list).encode()).hexdigest()[:8]
        return f"{self.dataset_name}/{method}/r{train_ratio:g}/{digest}"

    # ---- as plain data: the plan workers run, exactly as the command resolved it ----

    def to_dict(self) -> dict[str, Any]:
        def space(dims: Sequence[SearchDimension]) -> list[dict[str, Any]]:
            # A list: the order of the dimensions is part of the study names (files sort keys).
            return [{"name": d.name, **d.describe()} for d in dims]

        return {
            "dataset": self.dataset, "methods": list(self.methods), "trials": self.trials,
            "search_seeds": list(self.search_seeds), "final_seeds": list(self.final_seeds),
            "search": space(self.search), "protocol": dict(self.protocol),
            "method_params": {m: dict(p) for m, p in self.method_params.items()}, "pruner": dict(self.pruner),
            "method_protocol": {m: dict(p) for m, p in self.method_protocol.items()},
            "method_search": {m: space(dims) for m, dims in self.method_search.items()},
            "n_startup_trials": self.n_startup_trials, "equal_to": dict(self.equal_to),
            "search_seeds_by_ratio": {repr(r): list(seeds) for r, seeds in self.search_seeds_by_ratio.items()},
            "launcher": dict(self.launcher),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SweepPlan:
        def space(described: Sequence[Mapping[str, Any]]) -> tuple[SearchDimension, ...]:
            return tuple(SearchDimension.from_description(d["name"], {k: v for k, v in d.items() if k != "name"})
                         for d in described)

        plan = cls(
            dataset=values["dataset"], methods=tuple(values["methods"]), trials=int(values["trials"]),
            search_seeds=tuple(values["search_seeds"]), final_seeds=tuple(values["final_seeds"]),
            search=space(values["search"]), protocol=values["protocol"], method_params=values["method_params"],
            pruner=values["pruner"], method_protocol=values["method_protocol"],
            method_search={m: space(d) for m, d in values["method_search"].items()},
            n_startup_trials=int(values["n_startup_trials"]), equal_to=values["equal_to"],
            search_seeds_by_ratio={float(r): tuple(seeds) for r, seeds in values["search_seeds_by_ratio"].items()},
            launcher=values.get("launcher", {}),
        )
        plan.check()
        return plan


@dataclass(frozen=True)
class SweepJob:
    """What every worker of one sweep runs: the resolved plan, the storage, the data and where
    records go. The command writes it to a file that each spawned worker reads, so a worker can
    never run other studies than the command prepared (rebuilding its command line from flags
    once dropped ``--features``)."""

    plan: SweepPlan
    storage_url: str
    data_dir: Path
    out_dir: Path

    def write(self, path: Path) -> Path:
        return write_json_atomic(path, {"plan": self.plan.to_dict(), "storage_url": self.storage_url,
                                        "data_dir": str(self.data_dir), "out_dir": str(self.out_dir)})

    @classmethod
    def read(cls, path: Path) -> SweepJob:
        values = json.loads(Path(path).read_text())
        return cls(SweepPlan.from_dict(values["plan"]), values["storage_url"], Path(values["data_dir"]),
                   Path(values["out_dir"]))
