"""No arbitrary unpickling anywhere: weights are read weights-only, manifests and journals are JSON.

Two halves. An audit reads every Python source of the product with ``ast`` and fails,
naming file:line, on a call that can run code hidden in data (``pickle.load``,
``torch.load`` without ``weights_only=True``, ``np.load(allow_pickle=True)``, ``joblib.load``,
``yaml.load`` without a safe loader, ``eval``/``exec``, ...); the audit is itself tested on
snippets, so it cannot pass by seeing nothing. Then a weights file crafted to run a shell
command when unpickled is handed to every reader of weights the product has, and must be
refused with a clear error without the command ever running.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

from engines.errors import InputError
from engines.manifest import file_entry, read_manifest
from engines.models import create_model
from streamer.cli import main as mer_main
from tests.test_checkpoints import _RunsAShellCommand

REPO = Path(__file__).resolve().parents[1]
AUDITED = ("streamer", "engines", "training", "bench", "scripts")
DEFAULT_ENGINE = REPO / "engines" / "default_engine"

# Calls that run code from the data they read, whatever their arguments.
ALWAYS_UNSAFE = {
    **dict.fromkeys(("pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
                     "_pickle.Unpickler", "cPickle.load", "cPickle.loads", "dill.load", "dill.loads",
                     "cloudpickle.load", "cloudpickle.loads", "shelve.open", "pandas.read_pickle"),
                    "unpickles its input"),
    "joblib.load": "unpickles its input",
    "marshal.load": "loads code objects", "marshal.loads": "loads code objects",
    "torch.jit.load": "loads TorchScript code",
    "yaml.unsafe_load": "builds arbitrary objects", "yaml.unsafe_load_all": "builds arbitrary objects",
    "yaml.full_load": "builds arbitrary objects", "yaml.full_load_all": "builds arbitrary objects",
    "eval": "evaluates a string as code", "exec": "executes a string as code",
}
# Calls that are safe only with the right argument, checked where they are called.
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
CHECKED_CALLS = TORCH_LOADS | {"numpy.load", "yaml.load", "yaml.load_all"}


class _Audit(ast.NodeVisitor):
    """Finds unsafe deserialisation in one module; names are resolved through its imports."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # local name -> the dotted name it was imported as
        self.checked: set[int] = set()  # ids of call targets already judged with their arguments
        self.findings: list[tuple[int, str]] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.names[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.names[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if node.module and node.level == 0:
                self.names[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.names.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        if name in CHECKED_CALLS:
            self.checked.add(id(node.func))
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            if name in TORCH_LOADS and not _is_constant(keywords.get("weights_only"), True):
                self.findings.append((node.lineno, f"{name} without weights_only=True unpickles its input"))
            elif name == "numpy.load" and "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
                self.findings.append((node.lineno, "numpy.load with allow_pickle unpickles object arrays"))
            elif name.startswith("yaml.") and _loader_name(keywords.get("Loader")) not in SAFE_YAML_LOADERS:
                self.findings.append((node.lineno, f"{name} without a safe Loader builds arbitrary objects"))
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self._reference(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not self._reference(node):
            self.generic_visit(node)

    def _reference(self, node: ast.AST) -> bool:
        name = self.dotted(node)
        if name in ALWAYS_UNSAFE:
            self.findings.append((node.lineno, f"{name} {ALWAYS_UNSAFE[name]}"))
            return True
        if name in CHECKED_CALLS and id(node) not in self.checked:
            self.findings.append((node.lineno, f"{name} passed around uncalled: its arguments cannot be checked"))
            return True
        return False


def _is_constant(node: ast.AST | None, value: bool) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _loader_name(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def audit(source: str) -> list[tuple[int, str]]:
    visitor = _Audit()
    visitor.visit(ast.parse(source))
    return sorted(visitor.findings)


def test_no_source_unpickles_or_evaluates_data():
    files = sorted(path for folder in AUDITED for path in (REPO / folder).rglob("*.py"))
    assert len(files) > 100 and any(path.name == "checkpoints.py" for path in files)  # it really looked
    findings = [f"{path.relative_to(REPO)}:{line}: {reason}"
                for path in files for line, reason in audit(path.read_text(encoding="utf-8"))]
    assert findings == [], "unsafe deserialisation:\n" + "\n".join(findings)


@pytest.mark.parametrize(("source", "reason"), [
    ("import pickle\npickle.loads(data)", "pickle.loads unpickles its input"),
    ("from pickle import load as read\nread(handle)", "pickle.load unpickles its input"),
    ("import pickle as p\np.Unpickler(handle).load()", "pickle.Unpickler unpickles its input"),
    ("import joblib\njoblib.load(path)", "joblib.load unpickles its input"),
    ("import pandas as pd\npd.read_pickle(path)", "pandas.read_pickle unpickles its input"),
    ("import shelve\nshelve.open(path)", "shelve.open unpickles its input"),
    ("import torch\ntorch.load(path)", "torch.load without weights_only=True"),
    ("import torch\ntorch.load(path, map_location='cpu', weights_only=False)", "torch.load without weights_only=True"),
    ("from torch import load\nload(path, weights_only=flag)", "torch.load without weights_only=True"),
    ("import torch\nreader = torch.load", "torch.load passed around uncalled"),
    ("import numpy as np\nnp.load(path, allow_pickle=True)", "numpy.load with allow_pickle"),
    ("import yaml\nyaml.load(text)", "yaml.load without a safe Loader"),
    ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "yaml.load without a safe Loader"),
    ("import yaml\nyaml.unsafe_load(text)", "yaml.unsafe_load builds arbitrary objects"),
    ("eval(row['value'])", "eval evaluates a string as code"),
    ("def run(code):\n    exec(code)", "exec executes a string as code"),
])
def test_the_audit_finds_each_unsafe_pattern(source, reason):
    findings = audit(source)
    assert len(findings) == 1 and reason in findings[0][1], findings
    assert findings[0][0] == source.count("\n") + 1  # the line of the call


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(path, map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load(path)\nnp.load(path, allow_pickle=False)",
    "import yaml\nyaml.safe_load(text)\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import json\njson.loads(text)",
    "model.eval()",
    "import pickle\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass",
])
def test_the_audit_lets_safe_code_through(source):
    assert audit(source) == []


# --- a booby-trapped weights file, handed to every reader ----------------------------------------------------


@pytest.fixture
def trap(tmp_path: Path) -> tuple[Path, Path]:
    """A torch checkpoint that runs ``touch MARKER`` when unpickled; returns (file, marker)."""
    marker = tmp_path / "it_ran"
    path = tmp_path / "weights.pth"
    torch.save({"fc.weight": _RunsAShellCommand(f"touch {marker}")}, path)
    return path, marker


def _engine_with_weights(weights: Path, folder: Path) -> Path:
    """The shipped engine with ``weights`` in place of its own, the manifest's sha256 updated to match.

    The checksum then passes, so it is the weights reader itself that must refuse the file.
    """
    engine = folder / "engine"
    shutil.copytree(DEFAULT_ENGINE, engine)
    shutil.copyfile(weights, engine / "weights.pth")
    manifest = json.loads((engine / "manifest.json").read_text())
    manifest["files"]["weights.pth"] = file_entry(engine / "weights.pth")
    (engine / "manifest.json").write_text(json.dumps(manifest))
    return engine


REFUSED = "refused: the pickle holds something other than tensors, which mer never loads"


def test_engine_runtime_refuses_trapped_weights_with_a_valid_checksum(trap, tmp_path):
    from engines.runtime import load

    weights, marker = trap
    engine = _engine_with_weights(weights, tmp_path)
    with pytest.raises(InputError, match=REFUSED) as caught:
        load(engine, "torch")
    assert caught.value.path == engine / "weights.pth"
    assert not marker.exists()


def test_fine_tuning_start_refuses_trapped_weights(trap):
    from training.trainer import load_matching_weights

    weights, marker = trap
    with pytest.raises(InputError, match=REFUSED):
        load_matching_weights(create_model("ststnet"), str(weights))
    assert not marker.exists()


def test_mer_export_refuses_trapped_weights(trap, tmp_path, capsys):
    weights, marker = trap
    status = mer_main(["export", "--checkpoint", str(weights), "--model", "ststnet", "--out", str(tmp_path / "out")])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith(f"mer export: error: {weights}: {REFUSED} (") and "posix.system" in error
    assert error.count("\n") == 1  # one line
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_an_engine_manifest_is_only_ever_json(trap, tmp_path):
    weights, marker = trap
    engine = _engine_with_weights(weights, tmp_path)
    shutil.copyfile(weights, engine / "manifest.json")  # a pickle where the JSON manifest belongs
    with pytest.raises(InputError, match="manifest.json: not"):
        read_manifest(engine)
    assert not marker.exists()
