"""The repository documents itself from its own sources: the configuration reference is generated from the
schema and current, and the schema's enums equal the registries the code dispatches on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from saliency_trust.config_reference import SCHEMA, reference

REPO = Path(__file__).resolve().parents[1]


def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _at(schema: dict, *path: str) -> dict:
    node = schema
    for key in path:
        node = node["properties"][key] if "properties" in node and key in node["properties"] else node[key]
    return node


def test_configuration_reference_is_current():
    """docs/configuration.md is what `python -m saliency_trust.config_reference` generates from the schema."""
    generated = reference(SCHEMA)
    current = (REPO / "docs/configuration.md").read_text()
    assert current == generated, (
        "docs/configuration.md is stale: regenerate it with "
        "`python -m saliency_trust.config_reference > docs/configuration.md`"
    )


def test_configuration_reference_lists_every_key_with_its_allowed_values():
    text = reference(SCHEMA)
    assert "| `baselines.high` | `unet` | `detector` | `none` |" in text.replace("\\|", "|")
    assert "`randomization.draws`" in text and "`seeds`" in text
    # every key of the schema has a row, and every row says what the key means
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    empty = [r.split("|")[1].strip() for r in rows if r.rstrip().endswith("|  |")]
    assert not empty, f"keys without a description in the schema: {empty[:10]}"


def test_method_and_architecture_enums_equal_the_registries():
    from saliency_trust.models.registry import ARCHITECTURES
    from saliency_trust.saliency.methods import METHODS

    schema = _schema()
    methods = set(_at(schema, "saliency", "methods", "items")["enum"])
    controls = set(_at(schema, "saliency", "controls", "items")["enum"])
    assert methods == {k for k, m in METHODS.items() if not m.control}
    assert controls == {k for k, m in METHODS.items() if m.control}
    archs = set(_at(schema, "models", "items", "properties", "arch")["enum"])
    assert archs == set(ARCHITECTURES)


@pytest.mark.parametrize(
    "path, values",
    [
        (("randomization", "init"), "saliency_trust.models.randomize:INITS"),
        (("randomization", "test"), "saliency_trust.stats.randomization:TESTS"),
        (("metrics", "similarity_maps"), "saliency_trust.metrics.similarity:SIMILARITY_MAPS"),
        (("stats", "low_test"), "saliency_trust.stats.pass_fail:LOW_TESTS"),
        (("stats", "trained_vs_random_adjust"), "saliency_trust.stats.pass_fail:ADJUSTMENTS"),
    ],
)
def test_option_enums_equal_the_code(path, values):
    import importlib

    module, name = values.split(":")
    assert set(_at(_schema(), *path)["enum"]) == set(getattr(importlib.import_module(module), name))


def test_source_enum_equals_the_adapters():
    from saliency_trust.data.adapters import ADAPTERS

    sources = set(_schema()["properties"]["datasets"]["additionalProperties"]["properties"]["source"]["enum"])
    assert sources == set(ADAPTERS) | {"synthetic"}
