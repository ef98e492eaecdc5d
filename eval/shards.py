"""WebDataset eval shards as CLIP_benchmark lays them out, read with plain tarfile.

    DIR/test/nshards.txt, DIR/test/0.tar ... DIR/test/{n-1}.tar     (or any DIR/test/*.tar, or DIR/*.tar)
    DIR/classnames.txt, DIR/zeroshot_classification_templates.txt   (classification; also accepted in DIR/test/)
    DIR/dataset_type.txt                                            ("retrieval" for retrieval sets)

A sample is the run of consecutive tar members sharing a key (the member name up to the first dot of its
base name, as webdataset groups them); its fields are keyed by the lower-cased rest of the name.
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Iterator, Optional

from data.plural import count
from eval.errors import EvalError

_KEY_AND_FIELD = re.compile(r"^((?:.*/|)[^./]+)\.([^/]+)$")


def find_shards(root: Path, split: str) -> Optional[list[Path]]:
    """The shard list of a CLIP_benchmark-style directory, or None when `root` holds no shards."""
    split_dir = root / split
    count_file = split_dir / "nshards.txt"
    if count_file.is_file():
        text = count_file.read_text().strip()
        if not text.isdigit() or int(text) == 0:
            raise EvalError(f"{count_file} should hold a positive shard count, found {text!r}")
        shards = [split_dir / f"{i}.tar" for i in range(int(text))]
        missing = [s for s in shards if not s.is_file()]
        if missing:
            raise EvalError(f"{count_file} says {count(len(shards), 'shard')} but {len(missing)} missing, e.g. "
                            f"{missing[0]}")
        return shards
    for folder in (split_dir, root):
        shards = sorted(folder.glob("*.tar")) if folder.is_dir() else []
        if shards:
            return shards
    return None


def sidecar(shards: list[Path], root: Path, name: str) -> Optional[Path]:
    """A metadata file beside the shards or in the dataset root (CLIP_benchmark puts it in the root)."""
    for folder in (shards[0].parent, root):
        if (folder / name).is_file():
            return folder / name
    return None


def dataset_type(root: Path) -> str:
    path = root / "dataset_type.txt"
    return path.read_text().strip().lower() if path.is_file() else "classification"


def iter_samples(shard: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) for each sample of a shard, in tar order."""
    key: Optional[str] = None
    fields: dict[str, bytes] = {}
    try:
        with tarfile.open(shard, "r:*") as tar:
            for member in tar:
                match = _KEY_AND_FIELD.match(member.name)
                if not member.isfile() or match is None:
                    continue
                member_key, field = match.group(1), match.group(2).lower()
                if member_key != key and fields:
                    yield key, fields
                    fields = {}
                key = member_key
                fields[field] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise EvalError(f"cannot read shard {shard}: {e}") from None
    if fields:
        yield key, fields
