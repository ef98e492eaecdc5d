"""The five top-level packages are this repo's (generic names could resolve to other installed packages),
setup.cfg ships all of them with their data, and no leaf package imports `contrastive` or another leaf, except
that `eval` imports `data`."""
import ast
import configparser
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEAVES = ("losses", "data", "eval", "slurm")


@pytest.mark.parametrize("name", ("contrastive", *LEAVES))
def test_top_level_package_imports_from_this_repo(name):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve() == REPO / name / "__init__.py"


def test_setup_cfg_lists_every_package_and_ships_configs_and_eval_data():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for top in ("contrastive", *LEAVES)
               for p in (REPO / top).rglob("__init__.py")}
    assert listed == on_disk
    package_data = cfg["options.package_data"]
    assert "configs/*.yaml" in package_data["contrastive"] and "data/*.txt" in package_data["eval"]
    assert list((REPO / "contrastive" / "configs").glob("*.yaml")) and list((REPO / "eval" / "data").glob("*.txt"))
    assert cfg["options.entry_points"]["console_scripts"].strip() == "contrastive = contrastive.cli:main"


def imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


# DESIGN.md's one-way dependencies: eval reads data through data/ (one shard reader, one decoder, one atomic writer).
MAY_IMPORT = {"eval": {"data"}}


@pytest.mark.parametrize("leaf", LEAVES)
def test_a_leaf_package_imports_neither_contrastive_nor_another_leaf_but_eval_imports_data(leaf):
    forbidden = {"contrastive", *LEAVES} - {leaf} - MAY_IMPORT.get(leaf, set())
    for path in (REPO / leaf).rglob("*.py"):
        found = imported_top_levels(path) & forbidden
        assert not found, f"{path.relative_to(REPO)} imports {found}"


PEERS = {"open_clip", "open_clip_train", "transformers", "clip_benchmark"}  # test-only dependencies


@pytest.mark.parametrize("package", ("contrastive", *LEAVES))
def test_the_library_never_imports_a_peer(package):
    for path in (REPO / package).rglob("*.py"):
        found = imported_top_levels(path) & PEERS
        assert not found, f"{path.relative_to(REPO)} imports {found}"
