"""Class names and prompt templates: the ones shipped in eval/data/ and the ones datasets bring along.

A template is one line with `{c}` where the class name goes, e.g. `a photo of a {c}.`
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from eval.errors import EvalError

CLASSNAME_SLOT = "{c}"
TEMPLATE_SETS = {
    "openai": "templates_openai.txt",  # CLIP's 80 ImageNet prompts
    "simple": "templates_simple.txt",  # the 7-prompt subset from CLIP's prompt-engineering notebook
}


def _shipped(name: str) -> list[str]:
    return resources.files("eval").joinpath("data", name).read_text(encoding="utf-8").splitlines()


def imagenet_classnames() -> list[str]:
    """CLIP's 1000 ImageNet class names in sorted-WordNet-id order, duplicates ("missile", "sunglasses") kept."""
    return _shipped("imagenet_classnames.txt")


def template_set(name: str) -> list[str]:
    if name not in TEMPLATE_SETS:
        raise EvalError(f"unknown template set {name!r}; known: {', '.join(TEMPLATE_SETS)}")
    return _shipped(TEMPLATE_SETS[name])


def read_lines(path: Path, what: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped; an error if there are none."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"cannot read {what} file {path}: {e}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise EvalError(f"{what} file {path} is empty; expected one entry per line")
    return lines


def read_templates(path: Path) -> list[str]:
    templates = read_lines(path, "template")
    for number, template in enumerate(templates, 1):
        if CLASSNAME_SLOT not in template:
            raise EvalError(f"template {number} in {path} ({template!r}) has no {CLASSNAME_SLOT} for the class name")
    return templates


def fill(template: str, classname: str) -> str:
    return template.replace(CLASSNAME_SLOT, classname)
