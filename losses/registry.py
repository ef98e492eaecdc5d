"""Name -> loss class. A loss is one module with `@register("name")` on its class; its constructor's parameters
are its arguments (the config checks them by their annotations when it loads: contrastive/arguments.py), except
the widths the model supplies (MODEL_SUPPLIED), which a loss takes only if it projects tower outputs itself
(Llip)."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, TypeVar

T = TypeVar("T")

MODEL_SUPPLIED = ("image_dim", "text_dim", "embed_dim")

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
    """The class registered as `name`."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown loss {name!r}{hint}; known losses: {', '.join(names())}")
    return _REGISTRY[name]


def supplied(name: str) -> tuple[str, ...]:
    """The model-supplied widths the loss takes."""
    return tuple(p for p in inspect.signature(get(name)).parameters if p in MODEL_SUPPLIED)


def build(name: str, **kwargs: Any) -> Any:
    """The loss registered as `name`, built with `kwargs` (its arguments and the model-supplied widths it takes)
    over its defaults."""
    return get(name)(**kwargs)
