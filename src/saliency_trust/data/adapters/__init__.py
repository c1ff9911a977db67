"""Real-dataset adapters: public datasets already on disk to the canonical form (docs/own-data.md).

One module per source (``siim``, ``rsna``, ``mura``, ``chexpert``, ``generic``),
each with an ``Options`` dataclass (config ``datasets.<name>.<source>``), a
``tables`` function (the label tables it reads, which become the inputs of the
Snakemake rule so that an edited table reruns the conversion) and a ``collect``
function (tables -> :class:`~saliency_trust.data.adapters.common.Collection`).
Pixels are read and written by :mod:`saliency_trust.data.adapters.convert`.
Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from saliency_trust.data.adapters import chexpert, generic, mura, rsna, siim
from saliency_trust.data.adapters.common import Context, options_from_config, require_file
from saliency_trust.data.adapters.convert import ConvertOptions

ADAPTERS: dict[str, ModuleType] = {"siim": siim, "rsna": rsna, "mura": mura, "chexpert": chexpert, "generic": generic}
CONVERT_KEYS = ("image_size", "resize", "intensity", "on_error", "max_images")


def get_adapter(source: str) -> ModuleType:
    if source not in ADAPTERS:
        raise ValueError(f"unknown dataset source '{source}'; adapters: {sorted(ADAPTERS)} (or 'synthetic')")
    return ADAPTERS[source]


def context(name: str, dataset_cfg: dict) -> Context:
    """The dataset's root, checked: a missing key or folder names ``datasets.<name>.root``."""
    source = dataset_cfg.get("source")
    get_adapter(source)
    root = dataset_cfg.get("root")
    if not root:
        raise ValueError(f"datasets.{name}.root is required for source '{source}': the folder holding the dataset")
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise FileNotFoundError(
            f"datasets.{name}.root: dataset folder '{path}' does not exist. Set it in the config or on the command "
            f"line: --config 'datasets={{{name}: {{root: /path/to/{source}}}}}'"
        )
    return Context(name=name, source=source, root=path)


def adapter_options(name: str, dataset_cfg: dict):
    source = dataset_cfg["source"]
    section = dict(dataset_cfg.get(source) or {})
    confounder = (dataset_cfg.get("confounder") or {}).get("column")
    if source == "generic" and confounder and confounder not in section.get("extra_columns", []):
        # the shortcut check reads the confounder's 0/1 column from the canonical manifest
        section["extra_columns"] = [*section.get("extra_columns", []), confounder]
    return options_from_config(get_adapter(source).Options, section, f"datasets.{name}.{source}")


def convert_options(dataset_cfg: dict) -> ConvertOptions:
    return ConvertOptions(**{k: dataset_cfg[k] for k in CONVERT_KEYS if dataset_cfg.get(k) is not None})


def input_tables(name: str, dataset_cfg: dict) -> list[str]:
    """The label tables of a dataset, checked to exist (the conversion rule's inputs; cheap, no pixels read)."""
    ctx = context(name, dataset_cfg)
    adapter = get_adapter(ctx.source)
    opts = adapter_options(name, dataset_cfg)
    return [str(require_file(path, ctx.key(key))) for key, path in adapter.tables(ctx, opts).items()]
