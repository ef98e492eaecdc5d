"""Pluggable contrastive losses: `losses.build("clip" | "siglip" | "llip", **kwargs)`.

A loss is a scorer (dot | llip) x objective (softmax | sigmoid) x exchange (all_gather | ring);
the registered names are presets. Importing the package imports every module in it, so a new
loss is one file with one `@register("name")` class.
"""
import importlib
import pkgutil

from losses.base import ContrastiveLoss
from losses.registry import build, get, names, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "benchmark":  # a command, not a loss
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ContrastiveLoss", "build", "get", "names", "register"]
