"""Dataset readers: one module per corpus, one registry to load any of them by name.

``load_dataset("casme2", root=..., sheet=...)`` returns the corpus as
:class:`~training.samples.Sample` records (recognition datasets) or
:class:`~training.samples.Interval` records (spotting sheets). Reader modules are
imported only when asked for, so importing ``training.datasets.sheets`` (the writers)
stays cheap. See docs/datasets.md for each layout and its quirks.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from engines.errors import InputError
from training.samples import Interval, Sample

# name -> module in this package; each module has DEFAULT_SHEETS and read(root, sheet).
READERS: dict[str, str] = {
    "casme2": "casme2",
    "samm": "samm",
    "smic": "smic",
    "mmew": "mmew",
    "casme3": "casme3",
    "fer2013": "fer2013",
    "rafdb": "rafdb",
    "ckplus": "ckplus",
    "megc2019-apex": "megc2019_apex",
    "casme2-spot": "casme2_spot",
    "samm-lv": "samm_lv",
    "megc2019-flow": "megc2019_flow",
    "prepared": "prepared",
}
DATASET_NAMES: tuple[str, ...] = tuple(READERS)
SPOTTING_DATASETS: frozenset[str] = frozenset({"casme2-spot", "samm-lv"})


def load_dataset(
    name: str, root: str | Path | None = None, sheet: str | Path | None = None
) -> list[Sample] | list[Interval]:
    """Read dataset ``name``; ``sheet`` defaults to the dataset's standard file name in ``root``.

    Raises InputError for an unknown name, when neither a sheet nor a root holding the
    standard sheet is given, and for any malformed row.
    """
    module = reader_module(name)
    root = None if root is None else Path(root)
    sheet_path = Path(sheet) if sheet is not None else _default_sheet(name, root, module.DEFAULT_SHEETS)
    return module.read(root, sheet_path)


def reader_module(name: str) -> ModuleType:
    """The module that reads dataset ``name`` (it also knows where its frames live)."""
    if name not in READERS:
        raise InputError(f"unknown dataset {name!r} (known: {', '.join(DATASET_NAMES)})")
    return importlib.import_module(f"{__name__}.{READERS[name]}")


def standard_sheet(name: str, folder: str | Path) -> Path:
    """Dataset ``name``'s annotation sheet in ``folder``, under its standard file name."""
    sheet = _default_sheet(name, Path(folder), reader_module(name).DEFAULT_SHEETS)
    if sheet is None:
        raise InputError(f"{name} has no annotation sheet (its labels come from its folder layout)", path=folder)
    return sheet


def _default_sheet(name: str, root: Path | None, candidates: tuple[str, ...]) -> Path | None:
    """The first standard sheet file found in ``root``; None for a layout-only corpus (SMIC)."""
    if not candidates:
        if root is None:
            raise InputError(f"{name}: give --root (the folder holding the dataset)")
        return None
    if root is None:
        raise InputError(f"{name}: give a sheet or a root folder holding one of {', '.join(candidates)}")
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    raise InputError(f"{name}: none of {', '.join(candidates)} found", path=root)
