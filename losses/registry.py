"""Name -> loss class, and the arguments each loss takes.

A loss is one module with `@register("name")` on its class. The constructor's parameters are the loss's
arguments: the config's `loss.ARGUMENT=value` keys, typed by their annotations and defaulted by their
defaults, except the widths the model supplies (MODEL_SUPPLIED), which a loss takes only if it projects
tower outputs itself (Llip).
"""
from __future__ import annotations

import difflib
import inspect
import types
import typing
from typing import Any, Callable, Literal, Mapping, TypeVar, Union

T = TypeVar("T")

MODEL_SUPPLIED = ("image_dim", "text_dim", "embed_dim")

TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}

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


def arguments(name: str) -> dict[str, inspect.Parameter]:
    """The loss's config arguments (its constructor's parameters but the model-supplied widths), annotations
    resolved."""
    cls = get(name)
    hints = typing.get_type_hints(cls.__init__)
    return {p.name: p.replace(annotation=hints.get(p.name, Any)) for p in inspect.signature(cls).parameters.values()
            if p.name not in MODEL_SUPPLIED}


def supplied(name: str) -> tuple[str, ...]:
    """The model-supplied widths the loss takes."""
    return tuple(p for p in inspect.signature(get(name)).parameters if p in MODEL_SUPPLIED)


def describe(name: str) -> str:
    """'num_heads=8, tau=5.0, ...': the loss's arguments with their defaults."""
    return ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
                     for p in arguments(name).values()) or "none"


def resolve(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every argument of the loss: `given` (checked: known names, values of the annotated types) over the
    defaults. Raises ValueError naming the loss, the argument and what it takes."""
    params = arguments(name)
    unknown = [key for key in given if key not in params]
    if unknown:
        supplied_by_model = [key for key in unknown if key in MODEL_SUPPLIED]
        why = (f": {', '.join(supplied_by_model)} {'is' if len(supplied_by_model) == 1 else 'are'} supplied by the "
               "model" if supplied_by_model else f" does not take {', '.join(unknown)}")
        raise ValueError(f"loss {name!r}{why}; its arguments: {describe(name)}")
    for key, value in given.items():
        if not _is_instance(value, params[key].annotation):
            raise ValueError(f"loss {name!r}: {key}={value!r} is not {_type_name(params[key].annotation)}")
    missing = [p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in given]
    if missing:
        raise ValueError(f"loss {name!r} needs {', '.join(missing)}; its arguments: {describe(name)}")
    return {key: given.get(key, p.default) for key, p in params.items()}


def build(name: str, **kwargs: Any) -> Any:
    """The loss registered as `name`, built with `kwargs` (its arguments and the model-supplied widths it takes)
    over its defaults."""
    widths = {key: kwargs.pop(key) for key in MODEL_SUPPLIED if key in kwargs}
    needed = supplied(name)
    if set(widths) != set(needed):
        raise ValueError(f"loss {name!r} takes the model-supplied widths {', '.join(needed) or 'none'}, "
                         f"got {', '.join(widths) or 'none'}")
    return get(name)(**resolve(name, kwargs), **widths)


def _is_instance(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_is_instance(value, option) for option in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(annotation))
    if origin is Literal:
        return " or ".join(repr(v) for v in typing.get_args(annotation))
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
