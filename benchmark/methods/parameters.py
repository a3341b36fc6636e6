"""A method's parameters, declared once: name, type, default, the values it accepts, what it means.

Plans (``method_params``), the command line (``--param KEY=VALUE``) and the method itself read the
same declaration through :func:`resolve`, so a parameter a method does not take, or a value of the
wrong type or out of range, fails before any compute and names every valid parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Parameter:
    """One parameter of a method: ``kind`` is int, float or bool; ``valid`` (with ``rule``, its
    text) rejects out-of-range values; ``default`` None means "not set" (e.g. a rank chosen by a rule)."""

    name: str
    kind: type
    default: Any
    meaning: str
    valid: Callable[[Any], bool] | None = None
    rule: str = ""

    def describe(self) -> str:
        """``d (int >= 2, default 2)``: how error messages and ``mtlbench list`` show it."""
        rule = f" {self.rule}" if self.rule else ""
        return f"{self.name} ({self.kind.__name__}{rule}, default {self.default})"

    def parse(self, method: str, value: Any) -> Any:
        # bool is an int in Python: an int parameter given True, or a bool one given 1, is a mistake.
        accepted = (int, float) if self.kind is float else (self.kind,)
        if value is None and self.default is None:
            return None
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, accepted):
            raise ValueError(f"{method} parameter {self.name} must be {self.kind.__name__}, got {value!r}")
        value = self.kind(value)
        if self.valid is not None and not self.valid(value):
            raise ValueError(f"{method} parameter {self.name} must be {self.rule}, got {value!r}")
        return value


def resolve(method: str, declared: Sequence[Parameter], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared parameter's value: the given one, checked, else its default."""
    by_name = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        valid = "; ".join(p.describe() for p in declared) or "none"
        raise ValueError(f"{method} takes parameter(s) {valid}; not {unknown}")
    return {name: p.parse(method, given[name]) if name in given else p.default for name, p in by_name.items()}


def positive(value: float) -> bool:
    return value > 0


def at_least(minimum: int) -> Callable[[int], bool]:
    return lambda value: value >= minimum
