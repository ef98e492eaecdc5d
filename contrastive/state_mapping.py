"""Peer checkpoints as ours and ours as theirs, both directions from one table: an Entry names a tensor in the
peer's state dict and in ours (templates with {fields}), and the table gives the rules each way, which map a state
dict entry by entry. The formats (contrastive/openclip_format.py, contrastive/hf_format.py) are each such a table
and a config translation.

    TABLE = [Entry("visual.proj", "image_tower.projection.weight", TRANSPOSED), ...]
    ours = mapped(their_state, import_rules(TABLE), "OpenCLIP", hint="...", whose="our")
    theirs = mapped(our_state, export_rules(TABLE), "this model", hint="...", whose="OpenCLIP's")

FormatError (contrastive/errors.py) is a user error: the CLI prints it as one line.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

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


# Both directions of a state dict from one table. An entry names a tensor in the peer's state dict and in ours, as
# templates whose {fields} match FIELDS; a PARTS field on one side only is several tensors there and one on the
# other, the parts concatenated along the first dimension in PARTS' order and sizes (q, k, v as one qkv).
PARTS = {"qkv_proj": {"q_proj": 1, "k_proj": 1, "v_proj": 1}, "qkv_bias": {"q_bias": 1, "k_bias": 1, "v_bias": 1},
         "q_kv": {"q": 1, "kv": 2}}
PART_FIELD = {part: field for field, parts in PARTS.items() for part in parts}
FIELDS = {"block": r"\d+", "param": "weight|bias", "name": ".+", "qkv": "q|k|v",
          **{field: "|".join(parts) for field, parts in PARTS.items()}}
Transform = Callable[[torch.Tensor], torch.Tensor]
Reshape = tuple[Transform, Transform]  # (theirs -> ours, ours -> theirs)
TRANSPOSED: Reshape = (transpose, transpose)  # a projection stored as x @ P, ours as nn.Linear's weight
BATCHED: Reshape = (lambda v: v.unsqueeze(0), lambda v: v.squeeze(0))  # timm's position embedding is [1, n, d]
CLASS_TOKEN: Reshape = (lambda v: v.view(1, 1, -1), lambda v: v.view(-1))


@dataclass(frozen=True)
class Entry:
    theirs: str
    ours: str
    reshape: Reshape | None = None


def import_rules(entries: Iterable[Entry]) -> list[Rule]:
    return [_rule(e.theirs, e.ours, e.reshape and e.reshape[0]) for e in entries]


def export_rules(entries: Iterable[Entry]) -> list[Rule]:
    return [_rule(e.ours, e.theirs, e.reshape and e.reshape[1]) for e in entries]


def _rule(source: str, target: str, transform: Transform | None) -> Rule:
    pieces = re.split(r"\{(\w+)\}", source)
    names = pieces[1::2]
    pattern = re.compile("".join(re.escape(p) if i % 2 == 0 else f"({FIELDS[p]})" for i, p in enumerate(pieces)))
    split = next((f for f in re.findall(r"\{(\w+)\}", target) if f not in names), None)  # several tensors there
    joined = next((f for f in names if f in PARTS and f"{{{f}}}" not in target), None)  # a part of one there

    def convert(value: torch.Tensor, *groups: str) -> dict[str, torch.Tensor]:
        fields = dict(zip(names, groups))
        value = value if transform is None else transform(value)
        if split is not None:
            sizes = PARTS[split]
            unit = value.shape[0] // sum(sizes.values())
            chunks = value.split([unit * n for n in sizes.values()])
            return {target.format(**fields, **{split: part}): chunk for part, chunk in zip(sizes, chunks)}
        name = target.format(**fields)
        return {f"{name}:{fields[joined]}" if joined else name: value}

    return pattern, convert


def mapped(state: Mapping[str, torch.Tensor], rules: Sequence[Rule], source: str, hint: str,
           whose: str) -> dict[str, torch.Tensor]:
    """`state` through the rules (map_state_dict), each "NAME:PART" they give concatenated into NAME."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for name, value in map_state_dict(state, rules, source, hint).items():
        target, _, part = name.partition(":")
        if part:
            parts[target][part] = value
        else:
            out[name] = value
    for target, found in parts.items():
        order = PARTS[PART_FIELD[next(iter(found))]]
        missing = [part for part in order if part not in found]
        if missing:
            raise FormatError(f"{source} has no {' or '.join(missing)} for {whose} {target}")
        out[target] = torch.cat([found[part] for part in order])
    return out


def block_entries(theirs: str, ours: str, names: Mapping[str, str]) -> list[Entry]:
    """One entry per name of a repeated block, its index the {block} field on both sides."""
    return [Entry(f"{theirs}.{{block}}.{peer}", f"{ours}.{{block}}.{mine}") for peer, mine in names.items()]
