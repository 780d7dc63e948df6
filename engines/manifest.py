"""The engine manifest: what an exported engine directory holds and what its model expects.

An engine directory is self-describing: ``manifest.json`` names the model and its version,
the input contract, the preprocessing that produced the model's training inputs, the class
names, where the weights came from, and the sha256 of every file beside it. The runtime reads
only this file to know how to call the model, and refuses a directory whose files do not
match it (a half-copied or hand-edited engine must fail at load, not predict nonsense).

The schema is versioned (``"schema": "mer.engine/1"``); a reader refuses versions it does
not know. The format is documented in ``docs/engines.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.errors import InputError

__all__ = [
    "MANIFEST_NAME",
    "SCHEMA",
    "EngineManifest",
    "preprocessing_differences",
    "preprocessing_signature",
    "read_manifest",
    "sha256_file",
    "file_entry",
    "make_world_readable",
    "verify_files",
    "write_manifest",
]

SCHEMA = "mer.engine/1"
MANIFEST_NAME = "manifest.json"

# Top-level fields every mer.engine/1 manifest must have, with the JSON type each holds.
_REQUIRED = {
    "schema": str,
    "model": dict,
    "input": dict,
    "output": dict,
    "preprocessing": dict,
    "class_names": list,
    "files": dict,
}
_REQUIRED_MODEL = ("name", "version")
_REQUIRED_INPUT = ("name", "shape", "dtype")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _as_json(value: Any) -> Any:
    """Tuples become lists, as they will after a JSON round trip (so comparisons are fair)."""
    return json.loads(json.dumps(value, allow_nan=False))


def preprocessing_signature(
    cfg,
    flow_method: str | None = None,
    flow_params: Mapping[str, Any] | None = None,
    flow_size: Sequence[int] | None = None,
) -> dict:
    """How the model's input is made, field by field, from a model cfg (``ModelCfg``).

    The cfg's input contract gives size, channels, order, range and normalisation; the motion
    step is named explicitly (``flow_method`` and its ``flow_params``) so that the streaming
    path can reproduce it and :func:`preprocessing_differences` can name a mismatch. When not
    given, they come from the cfg's ``flow``/``flow_params`` attributes if it has them, else
    ``"tvl1"`` with the TV-L1 solver's default parameters. ``flow_size`` (height, width) is
    the face-crop resolution the flow is computed at; ``None`` means "the crop as given"
    (the composite's flows were computed before this project, at a size it cannot know).
    """
    if getattr(cfg, "clip", None) is not None:
        return _clip_signature(cfg)
    method = flow_method or getattr(cfg, "flow", None) or "tvl1"
    params = dict(flow_params if flow_params is not None else (getattr(cfg, "flow_params", None) or {}))
    if method == "tvl1" and flow_params is None and not params:
        params = _tvl1_defaults()
    channels, height, width = cfg.input_size
    return _as_json(
        {
            "motion": cfg.motion,
            "flow_method": method,
            "flow_params": params,
            "flow_size": None if flow_size is None else [int(v) for v in flow_size],
            "size": [height, width],
            "layout": "NCHW",
            "dtype": "float32",
            "channels": list(cfg.channels),
            "channel_order": cfg.channel_order,
            "value_range": list(cfg.value_range),
            "mean": None if cfg.mean is None else list(cfg.mean),
            "std": None if cfg.std is None else list(cfg.std),
        }
    )


def _clip_signature(cfg) -> dict:
    """A clip model's preprocessing: its :class:`~engines.clip_spec.ClipSpec`, which says how
    aligned face crops become the input (``engines.clip_input.build_clip_input`` follows it)."""
    return _as_json(
        {
            "motion": cfg.motion,
            "clip": cfg.clip.to_dict(),
            "size": [cfg.clip.size, cfg.clip.size],
            "layout": "NCHW" if len(cfg.input_size) == 3 else "NTCHW",
            "dtype": "float32",
            "channels": list(cfg.channels),
            "channel_order": cfg.channel_order,
            "value_range": list(cfg.value_range),
            "mean": None if cfg.mean is None else list(cfg.mean),
            "std": None if cfg.std is None else list(cfg.std),
        }
    )


def _tvl1_defaults() -> dict:
    from engines.motion.tvl1 import TVL1Params  # the solver owns its defaults

    return dataclasses.asdict(TVL1Params())


def preprocessing_differences(engine: Mapping[str, Any], caller: Mapping[str, Any]) -> list[str]:
    """``"field: engine X, caller Y"`` for every field whose value differs (or is missing on one side)."""
    engine, caller = _as_json(dict(engine)), _as_json(dict(caller))
    missing = object()
    differences = []
    for field in sorted(set(engine) | set(caller)):
        ours, theirs = engine.get(field, missing), caller.get(field, missing)
        if ours != theirs:
            shown = ["(missing)" if v is missing else json.dumps(v) for v in (ours, theirs)]
            differences.append(f"{field}: engine {shown[0]}, caller {shown[1]}")
    return differences


@dataclass(frozen=True)
class EngineManifest:
    """A validated ``manifest.json``; ``data`` is the whole JSON object."""

    path: Path
    data: dict

    @property
    def engine_dir(self) -> Path:
        return self.path.parent

    @property
    def model_name(self) -> str:
        return self.data["model"]["name"]

    @property
    def version(self) -> str:
        return self.data["model"]["version"]

    @property
    def engine_id(self) -> str:
        """``name@version``, how events and metrics name the engine."""
        return f"{self.model_name}@{self.version}"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.data["class_names"])

    @property
    def input_name(self) -> str:
        return self.data["input"]["name"]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The input shape without its (dynamic) batch axis, e.g. (3, 28, 28)."""
        return tuple(self.data["input"]["shape"][1:])

    @property
    def preprocessing(self) -> dict:
        return self.data["preprocessing"]

    @property
    def files(self) -> dict[str, dict]:
        return self.data["files"]

    def file_path(self, name: str) -> Path:
        """Path of a file the manifest lists; refuses names it does not list."""
        if name not in self.files:
            raise InputError(f"the manifest lists no file {name!r} (it lists {', '.join(self.files)})",
                             path=self.path, column="files")
        return self.engine_dir / name

    def check_preprocessing(self, signature: Mapping[str, Any]) -> None:
        """Refuse a caller whose preprocessing differs from the engine's, naming each differing field."""
        differences = preprocessing_differences(self.preprocessing, signature)
        if differences:
            first_field = differences[0].split(":", 1)[0]
            raise InputError(
                "the caller's preprocessing differs from the engine's: " + "; ".join(differences),
                path=self.path,
                column=f"preprocessing.{first_field}",
            )


def read_manifest(engine_dir: str | Path) -> EngineManifest:
    """Read and validate ``engine_dir/manifest.json`` (schema and required fields)."""
    engine_dir = Path(engine_dir)
    if not engine_dir.is_dir():
        raise InputError("engine directory not found", path=engine_dir)
    path = engine_dir / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"not an engine directory: no {MANIFEST_NAME}", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", path=path, row=exc.lineno) from None
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", path=path) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}", path=path)
    schema = data.get("schema")
    if schema != SCHEMA:
        raise InputError(f"unknown manifest schema {schema!r}; this mer reads {SCHEMA!r}", path=path, column="schema")
    for field, kind in _REQUIRED.items():
        if not isinstance(data.get(field), kind):
            raise InputError(f"missing or not a JSON {kind.__name__}", path=path, column=field)
    for section, fields in (("model", _REQUIRED_MODEL), ("input", _REQUIRED_INPUT)):
        for field in fields:
            if field not in data[section]:
                raise InputError("missing", path=path, column=f"{section}.{field}")
    shape = data["input"]["shape"]
    if not (isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) and d > 0 for d in shape[1:])):
        raise InputError(f"expected [batch, positive ints...], got {shape!r}", path=path, column="input.shape")
    _check_contract(data, path)
    for name, entry in data["files"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise InputError("expected an object with a sha256", path=path, column=f"files.{name}")
        if Path(name).name != name:
            raise InputError("file names must be plain names inside the engine directory", path=path,
                             column=f"files.{name}")
    return EngineManifest(path=path, data=data)


def _check_contract(data: dict, path: Path) -> None:
    """The manifest must agree with itself: as many class names as the output has scores, and the
    preprocessing's planes and size exactly the input's, so a hand-edited manifest fails at load
    instead of at the first event of a stream."""
    names = data["class_names"]
    if not names or not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise InputError(f"expected a list of distinct, non-empty class names, got {names!r}", path=path,
                         column="class_names")
    output_shape = data["output"].get("shape")
    if isinstance(output_shape, list) and output_shape and isinstance(output_shape[-1], int):
        if output_shape[-1] != len(names):
            raise InputError(f"says {output_shape[-1]} class scores per sample, but class_names lists "
                             f"{len(names)} ({', '.join(names)})", path=path, column="output.shape")
    sample = data["input"]["shape"][1:]
    preprocessing = data["preprocessing"]
    size = preprocessing.get("size")
    if size is not None:
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise InputError(f"expected [height, width] in pixels, got {size!r}", path=path,
                             column="preprocessing.size")
        if len(sample) >= 2 and size != sample[-2:]:
            raise InputError(f"the preprocessing makes {size[0]}x{size[1]} inputs, but input.shape says "
                             f"{sample[-2]}x{sample[-1]}", path=path, column="preprocessing.size")
    channels = preprocessing.get("channels")
    if channels is not None:
        if not (isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)):
            raise InputError(f"expected a list of plane names, got {channels!r}", path=path,
                             column="preprocessing.channels")
        if len(sample) >= 3 and len(channels) != sample[-3]:
            raise InputError(f"the preprocessing makes {len(channels)} planes ({', '.join(channels)}), but "
                             f"input.shape says {sample[-3]}", path=path, column="preprocessing.channels")
        for field in ("mean", "std"):
            values = preprocessing.get(field)
            if values is not None and not (isinstance(values, list) and len(values) == len(channels)
                                           and all(isinstance(v, (int, float)) for v in values)):
                raise InputError(f"expected null or one number per plane ({len(channels)}), got {values!r}",
                                 path=path, column=f"preprocessing.{field}")


def verify_files(manifest: EngineManifest) -> None:
    """Refuse an engine directory where a listed file is missing or its sha256 differs."""
    for name, entry in manifest.files.items():
        path = manifest.engine_dir / name
        if not path.is_file():
            raise InputError("file listed in the manifest is missing", path=path)
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise InputError(
                f"sha256 mismatch: manifest says {entry['sha256'][:16]}..., file has {actual[:16]}... "
                "(modified, truncated or from another engine)",
                path=path,
                column=f"files.{name}.sha256",
            )


def file_entry(path: Path) -> dict:
    """The manifest's record of one file: sha256 and size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def make_world_readable(path: Path) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the usual permissions, so engines can be shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_manifest(engine_dir: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (written last by export: its presence marks a complete engine)."""
    engine_dir = Path(engine_dir)
    text = json.dumps(_as_json(dict(data)), indent=2) + "\n"
    handle, tmp_name = tempfile.mkstemp(dir=engine_dir, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as tmp:
            tmp.write(text)
        make_world_readable(Path(tmp_name))
        os.replace(tmp_name, engine_dir / MANIFEST_NAME)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return engine_dir / MANIFEST_NAME
