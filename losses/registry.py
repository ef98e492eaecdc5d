"""Name -> loss class. A new loss is one file plus `@register("name")` (and an import in __init__)."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[T], T]:
    def add(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered by {_REGISTRY[name]}")
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return add


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Callable[..., Any]:
    """The class registered as `name` (e.g. to read its constructor's signature)."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown loss {name!r}{hint}; known losses: {', '.join(names())}")
    return _REGISTRY[name]


def build(name: str, **kwargs: Any) -> Any:
    """The loss registered as `name`, built with `kwargs` overriding its defaults."""
    cls = get(name)
    parameters = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(parameters))
    missing = [p.name for p in parameters.values() if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if unknown or missing:
        problem = f"does not take {', '.join(unknown)}" if unknown else f"needs {', '.join(missing)}"
        valid = ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
                          for p in parameters.values())
        raise ValueError(f"loss {name!r} {problem}; valid arguments: {valid}")
    return cls(**kwargs)
