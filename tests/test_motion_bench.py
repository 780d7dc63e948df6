"""``mer bench motion`` runs both solvers on the same pairs and reports their agreement."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from engines.commands import bench
from engines.errors import InputError


def parse(argv):
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_bench_motion_json_report(capsys):
    threads = torch.get_num_threads()
    args = parse(["bench", "motion", "--size", "32", "--pairs", "2", "--json"])
    assert args.run(args) == 0
    torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 2 and report["size"] == 32
    assert report["epe_torch_vs_opencv_px"] < 0.05
    for key in ("opencv_ms_per_pair", "torch_single_ms_per_pair", "torch_batched_ms_per_pair"):
        assert report[key] > 0


def test_bench_motion_rejects_bad_arguments():
    args = parse(["bench", "motion", "--size", "8"])
    with pytest.raises(InputError, match="--size"):
        args.run(args)
