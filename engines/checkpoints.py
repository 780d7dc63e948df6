"""Reading and writing model weights without ever unpickling arbitrary objects.

A ``.pth`` file is a pickle; ``torch.load`` with the default pickle module runs whatever the file
says (a crafted file can call ``os.system``). Every read here goes through
``torch.load(weights_only=True)``, whose restricted unpickler only rebuilds tensors and plain
containers and refuses any other global *before* calling it. It handles both torch
serialisation formats: the zip format of torch >= 1.6 and the legacy (non-zip) format of
torch <= 1.5 that the original STSTNet release used. An explicit ``weights_only=True`` is not
overridden by ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, and TorchScript archives are refused.

On top of that, a file must hold a *flat* mapping of parameter names to tensors (a state dict):
wrapped training checkpoints (``{"state_dict": ..., "optimizer": ...}``) are refused too, so
what is loaded is exactly the model's weights and nothing else.

Our own files are written as a plain ``dict`` of CPU tensors in the zip format, so
``mer evaluate --weights-dir DIR`` reads ``DIR/<subject>.pth`` the same way whichever wrote it.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from engines.errors import InputError

__all__ = ["load_weights", "read_state_dict", "subject_weights_path", "write_state_dict"]

log = logging.getLogger(__name__)

# What torch.load raises on a damaged or foreign file (truncated pickle, broken zip, ...).
_UNREADABLE = (EOFError, OSError, RuntimeError, ValueError, TypeError, KeyError, IndexError, zipfile.BadZipFile)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``name -> tensor`` mapping stored in ``path`` (either torch format), on the CPU.

    Raises :class:`InputError` naming the file when it is missing, damaged, contains anything
    but tensors, or is not a flat mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path=path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler stopped at content other than tensors and plain
        # containers (a foreign global such as os.system, or an opcode it does not allow).
        raise InputError(
            f"refused: the pickle holds something other than tensors, which mer never loads ({_refusal(exc)})",
            path=path,
        ) from None
    except _UNREADABLE as exc:
        raise InputError(f"not a readable torch weights file (damaged or truncated?): {_reason(exc)}", path=path) from None
    return _as_flat_state_dict(loaded, path)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, EOFError) and not text:
        return "the file ends early (EOFError)"
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# Boilerplate lines of torch's weights-only error message; the remaining line says what was refused.
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _refusal(exc: pickle.UnpicklingError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    return specific[0] if specific else "content torch's weights-only reader does not allow"


def _as_flat_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise InputError(f"expected a mapping of parameter names to tensors, got {type(loaded).__name__}", path=path)
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise InputError(f"expected parameter names as keys, got key {key!r}", path=path)
        if not isinstance(value, torch.Tensor):
            hint = " (a wrapped training checkpoint? save model.state_dict() only)" if isinstance(value, Mapping) else ""
            raise InputError(f"entry {key!r} is a {type(value).__name__}, not a tensor{hint}", path=path)
        state[key] = value
    if not state:
        raise InputError("the file holds no tensors", path=path)
    return state


def write_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write weights only (a plain dict of contiguous CPU tensors), atomically.

    The file is written beside ``path`` and renamed into place, so a crash never leaves a
    truncated checkpoint under the final name.
    """
    path = Path(path)
    plain = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"write_state_dict takes names -> tensors, got {key!r}: {type(value).__name__}")
        plain[key] = value.detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save(plain, tmp)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.debug("wrote %d tensors to %s", len(plain), path)
    return path


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` with every name and shape matching (strict).

    A mismatch is an :class:`InputError` naming the file and the first missing, unexpected or
    mis-shaped parameters, e.g. weights trained for another model or another class count.
    """
    path = Path(path)
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {tuple(state[key].shape)} (model has {tuple(expected[key].shape)})"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if reshaped:
        problems.append(f"wrong shape {_first(reshaped)}")
    if problems:
        raise InputError(f"weights do not fit {type(model).__name__}: {'; '.join(problems)}", path=path)
    model.load_state_dict(state, strict=True)
    return model


def _first(items: list[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def subject_weights_path(weights_dir: str | Path, subject: str) -> Path:
    """``weights_dir/<subject>.pth``, the per-fold layout of LOSO weights (the release's and ours)."""
    path = Path(weights_dir) / f"{subject}.pth"
    if not path.is_file():
        raise InputError(f"no weights for subject {subject!r} (expected {path.name})", path=path)
    return path
