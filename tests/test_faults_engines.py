"""Broken engines are refused, with one line naming the file and field, before a stream starts.

Each fault is injected for real into a copy of the engine shipped with mer: a missing file, a
model cut short, a flipped byte, a manifest whose preprocessing the stream cannot follow or
whose class names do not match the model's outputs. Each is tried through the runtime API
(``Recognizer``, what ``mer stream`` and ``mer analyze`` open) and through both commands.
The commands are given ports that are already taken and a source that does not exist, so
the engine's refusal being the error they report shows it came before any socket was bound
or frame read; and no journal or output folder may exist afterwards.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engines.errors import InputError
from engines.manifest import sha256_file
from streamer.cli import main as mer_main
from streamer.recognizer import Recognizer, default_engine_dir
from tests.streaming_fixtures import REPO
from tests.video_clips import write_pyav


def edit_manifest(engine: Path, edit: Callable[[dict], None]) -> None:
    path = engine / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def rehash(engine: Path, name: str) -> None:
    """Make the manifest's sha256 match a damaged file, as a careless re-packer would."""
    edit_manifest(engine, lambda data: data["files"][name].update(sha256=sha256_file(engine / name)))


def set_preprocessing(field: str, value) -> Callable[[Path], None]:
    return lambda engine: edit_manifest(engine, lambda data: data["preprocessing"].__setitem__(field, value))


def set_flow_params(**params) -> Callable[[Path], None]:
    return lambda engine: edit_manifest(engine, lambda data: data["preprocessing"]["flow_params"].update(params))


FOUR_CLASSES = ["negative", "positive", "surprise", "other"]


def four_class_names(engine: Path) -> None:
    edit_manifest(engine, lambda data: data.update(class_names=FOUR_CLASSES))


def four_classes_everywhere_in_the_manifest(engine: Path) -> None:
    """A manifest that agrees with itself on four classes, beside a model that outputs three."""
    def edit(data):
        data["class_names"] = FOUR_CLASSES
        data["output"]["shape"] = ["batch", 4]
        data["model"]["args"]["label_names"] = FOUR_CLASSES
    edit_manifest(engine, edit)


# name: (how the copy is damaged, the file the error names, the field it names, words of the reason)
FAULTS = {
    "missing_engine": (lambda e: shutil.rmtree(e), "", None, "engine directory not found"),
    "missing_model": (lambda e: (e / "model.onnx").unlink(), "model.onnx", None,
                      "file listed in the manifest is missing"),
    "truncated_model": (lambda e: truncate(e / "model.onnx"), "model.onnx", "files.model.onnx.sha256",
                        "sha256 mismatch"),
    "truncated_model_rehashed": (lambda e: (truncate(e / "model.onnx"), rehash(e, "model.onnx")), "model.onnx", None,
                                 "not a loadable ONNX model (corrupt or truncated?)"),
    "checksum_mismatch": (lambda e: flip_byte(e / "weights.pth"), "weights.pth", "files.weights.pth.sha256",
                          "sha256 mismatch"),
    "preprocessing_size": (set_preprocessing("size", [32, 32]), "manifest.json", "preprocessing.size",
                           "the preprocessing makes 32x32 inputs, but input.shape says 28x28"),
    "preprocessing_planes": (set_preprocessing("channels", ["u", "v"]), "manifest.json", "preprocessing.channels",
                             "the preprocessing makes 2 planes (u, v), but input.shape says 3"),
    "preprocessing_flow_method": (set_preprocessing("flow_method", "farneback2"), "manifest.json",
                                  "preprocessing.flow_method", "unknown flow method 'farneback2'"),
    "preprocessing_flow_parameter": (set_flow_params(pyramid=3), "manifest.json",
                                     "preprocessing.flow_params.pyramid", "unknown TV-L1 parameter"),
    "preprocessing_flow_parameter_type": (set_flow_params(nscales="two"), "manifest.json", "preprocessing",
                                          "the engine cannot be run as its manifest says (TypeError"),
    "preprocessing_value_range": (set_preprocessing("value_range", [0.0, 1.0]), "manifest.json",
                                  "preprocessing.value_range", "only the 0..255 min-max flow image is supported"),
    "class_count_in_manifest": (four_class_names, "manifest.json", "output.shape",
                                "says 3 class scores per sample, but class_names lists 4"),
    "class_count_of_model": (four_classes_everywhere_in_the_manifest, "model.onnx", "class_names",
                             "the model outputs 3 class scores per sample, but the manifest's class_names lists 4"),
}


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    return Path(shutil.copytree(default_engine_dir(), tmp_path / "engine"))


def damaged(engine: Path, fault: str) -> Path:
    FAULTS[fault][0](engine)
    return engine


def assert_names_the_fault(message: str, engine: Path, fault: str) -> None:
    _, file, field, reason = FAULTS[fault]
    assert "\n" not in message
    assert message.startswith(f"{engine / file if file else engine}"), message
    if field is not None:
        assert f"column '{field}'" in message, message
    assert reason in message, message


@pytest.fixture(scope="module")
def one_frame_video(tmp_path_factory) -> Path:
    return write_pyav(tmp_path_factory.mktemp("video") / "clip.mp4", 3)


def taken_port() -> socket.socket:
    """A loopback port held open by the test for as long as the returned socket lives."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.fixture
def onnxruntime_profile(tmp_path: Path) -> Path:
    """A stream profile that pins the backend, so the messages are the same on a GPU machine."""
    path = tmp_path / "profile.toml"
    path.write_text('[engine]\nbackend = "onnxruntime"\n')
    return path


def test_the_undamaged_copy_is_accepted(engine, one_torch_thread):
    """The control: every refusal below is caused by its fault, not by the copy."""
    recognizer = Recognizer(engine, backend="onnxruntime")
    assert recognizer.engine_id == "ststnet@synthetic-0"
    onset, apex = np.random.default_rng(0).integers(0, 256, (2, 128, 128), dtype=np.uint8)
    result = recognizer.classify(onset, apex)
    assert set(result.scores) == {"negative", "positive", "surprise"}


@pytest.mark.parametrize("fault", FAULTS)
def test_recognizer_refuses_the_engine_naming_file_and_field(engine, fault, one_torch_thread):
    damaged(engine, fault)
    with pytest.raises(InputError) as refused:
        Recognizer(engine, backend="onnxruntime")
    assert_names_the_fault(str(refused.value), engine, fault)


@pytest.mark.parametrize("fault", ["checksum_mismatch", "preprocessing_size", "preprocessing_flow_parameter",
                                   "class_count_in_manifest"])
def test_torch_backend_refuses_it_as_well(engine, fault, one_torch_thread):
    damaged(engine, fault)
    with pytest.raises(InputError) as refused:
        Recognizer(engine, backend="torch")
    assert_names_the_fault(str(refused.value), engine, fault)


def test_torch_backend_refuses_a_model_with_other_classes_than_the_manifest(engine, one_torch_thread):
    four_classes_everywhere_in_the_manifest(engine)
    with pytest.raises(InputError) as refused:
        Recognizer(engine, backend="torch")
    message = str(refused.value)
    assert message.startswith(str(engine / "weights.pth")) and "\n" not in message
    assert "wrong shape fc.weight (3, 400) (model has (4, 400))" in message


@pytest.mark.parametrize("fault", FAULTS)
def test_mer_stream_refuses_before_binding_or_reading(engine, fault, onnxruntime_profile, tmp_path, capsys,
                                                     one_torch_thread):
    damaged(engine, fault)
    journal = tmp_path / "journal" / "events.jsonl"
    with taken_port() as events, taken_port() as replay, taken_port() as metrics:
        status = mer_main(["-q", "stream", "--source", str(tmp_path / "no-such-video.mp4"), "--engine", str(engine),
                           "--config", str(onnxruntime_profile),
                           "--endpoint", f"tcp://127.0.0.1:{events.getsockname()[1]}",
                           "--replay-endpoint", f"tcp://127.0.0.1:{replay.getsockname()[1]}",
                           "--metrics-port", str(metrics.getsockname()[1]), "--journal", str(journal)])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert error[-1].startswith("mer stream: error: ")
    assert_names_the_fault(error[-1].removeprefix("mer stream: error: "), engine, fault)
    assert not journal.parent.exists()  # the publisher never opened its journal


@pytest.mark.parametrize("fault", ["missing_model", "truncated_model", "preprocessing_size", "class_count_of_model"])
def test_mer_analyze_refuses_before_writing_anything(engine, fault, one_frame_video, onnxruntime_profile, tmp_path,
                                                     capsys, one_torch_thread):
    damaged(engine, fault)
    out = tmp_path / "analysis"
    status = mer_main(["-q", "analyze", str(one_frame_video), "--engine", str(engine), "--out", str(out),
                       "--config", str(onnxruntime_profile), "--no-progress"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert error[-1].startswith("mer analyze: error: ")
    assert_names_the_fault(error[-1].removeprefix("mer analyze: error: "), engine, fault)
    assert not out.exists()


def test_real_mer_stream_process_exits_with_one_line(engine, onnxruntime_profile, tmp_path):
    """The command line in its own process: status 2, a single line on stderr, no traceback."""
    damaged(engine, "preprocessing_flow_parameter")
    journal = tmp_path / "events.jsonl"
    result = subprocess.run([sys.executable, "-m", "streamer.cli", "-q", "stream", "--source", "0",
                             "--engine", str(engine), "--config", str(onnxruntime_profile), "--journal", str(journal)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_names_the_fault(result.stderr.strip().removeprefix("mer stream: error: "), engine,
                           "preprocessing_flow_parameter")
    assert result.stdout == "" and not journal.exists()
