"""A registered class's constructor parameters as config arguments: the loss's `loss.ARGUMENT=value` keys and an
evaluation task's `eval.tasks.NAME.ARGUMENT=value` keys, named, typed by their annotations and defaulted by their
defaults, checked when the config loads.

    resolve(losses.get("llip"), {"tau": 5}, "loss 'llip'", supplied=losses.MODEL_SUPPLIED)
    # {"num_heads": 8, "tau": 5, ...}: every argument, the given ones checked
"""
from __future__ import annotations

import difflib
import inspect
import types
import typing
from typing import Any, Collection, Literal, Mapping, Union

TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def arguments(cls: type, supplied: Collection[str] = ()) -> dict[str, inspect.Parameter]:
    """The constructor's parameters but the `supplied` ones (given by the code, not the config), annotations
    resolved."""
    hints = typing.get_type_hints(cls.__init__)
    return {p.name: p.replace(annotation=hints.get(p.name, Any)) for p in inspect.signature(cls).parameters.values()
            if p.name not in supplied and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def describe(cls: type, supplied: Collection[str] = ()) -> str:
    """'num_heads=8, tau=5.0, ...': the arguments with their defaults."""
    return ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
                     for p in arguments(cls, supplied).values()) or "none"


def resolve(cls: type, given: Mapping[str, Any], what: str, supplied: Collection[str] = ()) -> dict[str, Any]:
    """Every argument: `given` (checked: known names, values of the annotated types) over the defaults. Raises
    ValueError naming `what` ("loss 'llip'"), the argument and what it takes."""
    params = arguments(cls, supplied)
    unknown = [key for key in given if key not in params]
    if unknown:
        by_code = [key for key in unknown if key in supplied]
        why = (f": {', '.join(by_code)} {'is' if len(by_code) == 1 else 'are'} supplied by the model" if by_code
               else f" does not take {', '.join(unknown)}")
        close = difflib.get_close_matches(unknown[0], params, n=1)
        hint = f" (did you mean {close[0]}?)" if close and not by_code else ""
        raise ValueError(f"{what}{why}{hint}; its arguments: {describe(cls, supplied)}")
    for key, value in given.items():
        if not _is_instance(value, params[key].annotation):
            raise ValueError(f"{what}: {key}={value!r} is not {_type_name(params[key].annotation)}")
    missing = [p.name for p in params.values() if p.default is inspect.Parameter.empty and p.name not in given]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}; its arguments: {describe(cls, supplied)}")
    return {key: given.get(key, p.default) for key, p in params.items()}


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
