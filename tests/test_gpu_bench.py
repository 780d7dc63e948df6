"""`mer bench gpu` on a machine without CUDA: the CPU parts of every section, and the int8 row's reference."""

from __future__ import annotations

import json

import numpy as np

from streamer.cli import main
from streamer.gpu_bench import _int8_options
from streamer.recognizer import default_engine_dir


def test_quick_bench_without_cuda_measures_every_part_on_the_cpu(tmp_path, capsys) -> None:
    out = tmp_path / "gpu.json"
    assert main(["-q", "bench", "gpu", "--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu only (no CUDA device)" and set(report["part_seconds"]) == {"tvl1", "engines", "streams"}

    assert [row["params"] for row in report["tvl1"]] == ["opencv-defaults", "default-engine"]
    for row in report["tvl1"]:
        assert row["device"] == "cpu" and set(row["variants"]) == {"eager", "eager-sync-free"}
        for variant in row["variants"].values():
            assert variant["epe_vs_cpu_torch_px"] == 0.0  # the same solver, the same device
            assert variant["epe_vs_opencv_px"] <= 0.15 and variant["epe_vs_truth_px"] < 0.5
            assert variant["ms_batch"] > 0

    backends = {(row["engine"], row["backend"]) for row in report["engines"]}
    assert backends == {(engine, backend) for engine in ("default-engine (ststnet)", "dual_atme (random weights)")
                        for backend in ("torch cpu", "onnxruntime cpu")}
    for row in report["engines"]:
        assert "error" not in row, row
        assert row["max_prob_gap_vs_torch_cpu"] <= 1e-5 and row["batch64_samples_per_s"] > 0

    (streams,) = report["streams"]  # whether a loaded CI machine keeps up is timing, not asserted
    assert streams["runs"] and streams["runs"][0]["streams"] == 1
    for run in streams["runs"]:  # every request is accounted for
        assert run["completed"] + run["refused"] <= run["requests"] and run["completed"] > 0
        assert run["keeps_up"] == (run["streams"] <= streams["sustained_streams_30fps"])


def test_the_int8_row_is_checked_against_its_own_qdq_graph(tmp_path) -> None:
    inputs = np.random.default_rng(0).uniform(0, 255, (64, 3, 28, 28)).astype(np.float32)
    options, expected = _int8_options(default_engine_dir(), tmp_path, inputs)
    assert options["precision"] == "int8" and options["calibration"].is_file()
    assert expected.shape == (64, 3)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)
    from engines.runtime import load

    fp32 = load(default_engine_dir(), "onnxruntime").predict(inputs)
    assert 0 < np.abs(expected - fp32).max() < 1  # quantized, so not fp32's scores, yet probabilities
