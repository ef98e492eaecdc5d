r"""Peer checkpoints as ours: a state dict mapped entry by entry by rules (regex -> our entries), and the error
that names what a mapping cannot express. The formats (contrastive/openclip_format.py, contrastive/hf_format.py)
are each a list of rules and a config translation.

    RULES = [(re.compile(r"visual\.proj"), rename("image_tower.projection.weight", transpose)), ...]
    ours = map_state_dict(their_state, RULES, "OpenCLIP", hint="an OpenAI-style CLIP ViT has visual.*, ...")

FormatError (contrastive/errors.py) is a user error: the CLI prints it as one line.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import torch

from contrastive.errors import FormatError

# A rule's conversion: the peer's tensor and the pattern's groups -> our entries.
Convert = Callable[..., dict[str, torch.Tensor]]
Rule = tuple[re.Pattern[str], Convert]


def map_state_dict(state: Mapping[str, torch.Tensor], rules: Sequence[Rule], source: str,
                   hint: str) -> dict[str, torch.Tensor]:
    """Every entry through the first rule whose pattern matches it whole; an entry no rule matches is an error
    naming it (`hint`: what the source's entries look like), never a silent skip."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        for pattern, convert in rules:
            match = pattern.fullmatch(name)
            if match:
                out.update(convert(value, *match.groups()))
                break
        else:
            raise FormatError(f"{source} tensor {name} {list(value.shape)} has no counterpart here ({hint})")
    return out


def rename(target: str, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Convert:
    """One entry named `target` (formatted with the pattern's groups), the value transformed or as it is."""
    return lambda value, *groups: {target.format(*groups): value if transform is None else transform(value)}


def transpose(value: torch.Tensor) -> torch.Tensor:
    """A projection stored as x @ P ([in, out]) as nn.Linear's weight ([out, in])."""
    return value.T.contiguous()


def refuse_unknown(cfg: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise FormatError(f"{where} sets {', '.join(unknown)}, which this import cannot express (it knows "
                          f"{', '.join(sorted(known))})")


def check_shapes(converted: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """The converted entries are exactly the model's, each of its shape: one error naming the first that is not (a
    wrong shape first, the clearest sign of another architecture)."""
    for name, value in converted.items():
        if name in expected and value.shape != expected[name].shape:
            raise FormatError(f"{source} gives {name} of shape {list(value.shape)}; the configured model expects "
                              f"{list(expected[name].shape)}")
    missing = sorted(expected.keys() - converted.keys())
    if missing:
        raise FormatError(f"{source} has no tensor for our {missing[0]} {list(expected[missing[0]].shape)}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(converted.keys() - expected.keys())
    if extra:
        raise FormatError(f"{source} gives {extra[0]} {list(converted[extra[0]].shape)}, which the configured model "
                          "lacks")
