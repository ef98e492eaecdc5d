"""Pluggable contrastive losses: `losses.build("clip" | "siglip" | "llip", **kwargs)`.

A loss is a scorer (dot | llip) x objective (softmax | sigmoid) x exchange (all_gather | ring);
the registered names are presets, each taking its own arguments. Importing the package imports
every module in it, so a new loss is one file with one `@register("name")` class; a loss outside
the repository is a module named in the config's `plugins:`.
"""
import importlib
import pkgutil

from losses.base import ContrastiveLoss
from losses.registry import MODEL_SUPPLIED, build, get, names, register, supplied

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODEL_SUPPLIED", "ContrastiveLoss", "build", "get", "names", "register", "supplied"]
