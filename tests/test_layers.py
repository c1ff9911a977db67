"""Imports run one way (docs/development.md): from the stage entry points down through the science
modules to io/config, never from a lower layer to a higher one. Every import of the package is
read from the source (module level and inside functions), so a lazy import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "src" / "saliency_trust"
# rank of each top-level part of the package: a module may import parts of a lower rank and its own part
LAYERS = {
    "io": 0,
    "execution": 0,
    "config": 1,
    "storage": 1,
    "data": 2,
    "models": 3,
    "saliency": 4,
    "metrics": 4,  # siblings: metrics read maps through storage, never through saliency
    "stats": 5,
    "plots": 6,
    "qc": 6,  # quality control (INFORMER): maps, models and the stats tables' writers; plots read its tables
    "validation": 7,
    "config_reference": 7,
    "envs": 7,  # tools the Snakefile and the docs call
    "resources": 7,  # the SLURM profile's fit from measured jobs (python -m saliency_trust.resources)
}


def part_of(module: str) -> str:
    """``saliency_trust.metrics.utility`` -> ``metrics``; ``saliency_trust.io`` -> ``io``."""
    return module.split(".")[1]


def package_imports(path: Path) -> set[str]:
    """Every ``saliency_trust.*`` module the file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("saliency_trust.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("saliency_trust."):
                found.add(node.module)
            elif node.module == "saliency_trust":
                found |= {f"saliency_trust.{a.name}" for a in node.names}
    return found


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if name != "saliency_trust":
            out[name] = path
    return out


def test_every_part_of_the_package_has_a_layer():
    assert {part_of(m) for m in modules()} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_from_a_lower_layer_to_a_higher_one(module):
    own = part_of(module)
    upward = sorted(
        m for m in package_imports(modules()[module]) if part_of(m) != own and LAYERS[part_of(m)] >= LAYERS[own]
    )
    assert not upward, f"{module} (layer {own}) imports {upward}"


def test_the_rules_the_issue_names_hold():
    """Models and metrics do not import saliency; data imports none of the science parts."""
    science = {"models", "saliency", "metrics", "stats", "plots"}
    for module, path in modules().items():
        parts = {part_of(m) for m in package_imports(path)}
        if part_of(module) in ("models", "metrics"):
            assert "saliency" not in parts, module
        if part_of(module) == "data":
            assert not parts & science, module


def test_the_checker_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n\ndef f():\n    from saliency_trust.saliency.compute import x\n"
        "    import saliency_trust.metrics.utility as u\n    from saliency_trust import plots\n"
    )
    assert package_imports(source) == {
        "saliency_trust.saliency.compute",
        "saliency_trust.metrics.utility",
        "saliency_trust.plots",
    }
