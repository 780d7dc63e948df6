"""``mer data inspect``: text and --json output, on written fixtures and on the real sheets."""

from __future__ import annotations

import argparse
import json

import pytest

from training.commands import data
from training.datasets.sheets import write_casme2_coding_sheet, write_samm_lv_sheet
from training.samples import Interval, Sample


def run_data(argv: list[str]) -> int:
    """Parse and run like streamer.cli.main does, with only the data subcommand registered."""
    parser = argparse.ArgumentParser(prog="mer")
    data.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def casme2_fixture(tmp_path):
    samples = [
        Sample("casme2", "sub01", "EP02_01f", "happiness", 1, 2, 3, ("12",)),
        Sample("casme2", "sub01", "EP19_05f", "disgust", 1, None, 3, ("4",)),
        Sample("casme2", "sub02", "EP01_11f", "repression", 1, 2, 3, ("15",)),
        Sample("casme2", "sub03", "EP01_01", "others", 1, 2, 3, ("4",)),
    ]
    write_casme2_coding_sheet(tmp_path / "CASME2-coding-20190701.xlsx", samples)
    return tmp_path


def test_inspect_json_from_a_sheet_alone(tmp_path, capsys):
    root = casme2_fixture(tmp_path)
    assert run_data(["data", "inspect", "--dataset", "casme2", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "samples": 4,
        "subjects": 3,
        "emotions": {"disgust": 1, "happiness": 1, "others": 1, "repression": 1},
        "megc3": {"negative": 2, "positive": 1, "surprise": 0},
    }


def test_inspect_text(tmp_path, capsys):
    root = casme2_fixture(tmp_path)
    assert run_data(["data", "inspect", "--dataset", "casme2", "--sheet", str(root / "CASME2-coding-20190701.xlsx")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "casme2: 4 samples, 3 subjects",
        "  emotions: disgust 1, happiness 1, others 1, repression 1",
        "  megc3: negative 2, positive 1, surprise 0",
        "  frames on disk: 0 of 4 samples",
    ]


def test_inspect_spotting_sheet_json_counts_kinds(tmp_path, capsys):
    write_samm_lv_sheet(tmp_path / "lv.csv", [
        Interval("samm-lv", "006", "006_1", 1, 2, 3, "macro", expression_id="006_1_1"),
        Interval("samm-lv", "007", "007_1", 1, None, 3, "micro", expression_id="007_1_1"),
        Interval("samm-lv", "007", "007_1", 5, 6, 9, "micro", expression_id="007_1_2"),
    ])
    assert run_data(["data", "inspect", "--dataset", "samm-lv", "--sheet", str(tmp_path / "lv.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"samples": 3, "subjects": 2, "emotions": {}, "kinds": {"micro": 2, "macro": 1}}


def test_inspect_list_prints_every_sample_and_each_subject(tmp_path, capsys):
    root = casme2_fixture(tmp_path)
    assert run_data(["data", "inspect", "--dataset", "casme2", "--root", str(root), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index("subject\tid\tonset\tapex\toffset\temotion\tclasses") + 1:]
    assert table[0] == "sub01\tEP02_01f\t1\t2\t3\thappiness\tcasme2-5=happiness,megc3=positive"
    assert table[1] == "sub01\tEP19_05f\t1\t-\t3\tdisgust\tcasme2-5=disgust,megc3=negative"
    assert table[3] == "sub03\tEP01_01\t1\t2\t3\tothers\tcasme2-5=others"
    assert table[4] == "per subject: sub01 2, sub02 1, sub03 1"


def test_inspect_list_of_spotting_intervals(tmp_path, capsys):
    write_samm_lv_sheet(tmp_path / "lv.csv", [Interval("samm-lv", "006", "006_1", 10, None, 30, "micro", expression_id="006_1_2")])
    assert run_data(["data", "inspect", "--dataset", "samm-lv", "--sheet", str(tmp_path / "lv.csv"), "--list"]) == 0
    assert "006\t006_1/006_1_2\t10\t-\t30\t-\tmicro" in capsys.readouterr().out.splitlines()


def test_full_cli_reports_a_missing_sheet_as_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("training.commands.synth", reason="streamer.cli also loads training.commands.synth (not yet present)")
    from streamer.cli import main

    assert main(["data", "inspect", "--dataset", "casme2", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mer data: error: ") and "none of CASME2-coding-20190701.xlsx" in err and "\n" not in err


@pytest.mark.realdata
def test_inspect_json_on_the_real_composite(shared_data, capsys):
    assert run_data(["data", "inspect", "--dataset", "megc2019-flow", "--root", str(shared_data / "HTNet"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "samples": 442,
        "subjects": 68,
        "emotions": {"negative": 250, "positive": 109, "surprise": 83},
        "megc3": {"negative": 250, "positive": 109, "surprise": 83},
        "datasets": {
            "casme2": {"negative": 88, "positive": 32, "surprise": 25},
            "samm": {"negative": 92, "positive": 26, "surprise": 15},
            "smic": {"negative": 70, "positive": 51, "surprise": 43},
        },
    }


@pytest.mark.realdata
def test_inspect_json_on_the_real_spotting_sheet(shared_data, capsys):
    sheet = shared_data / "MEGC2024-CODE/label/datasetlabel/CAS(ME)^2code_final(Updated).csv"
    assert run_data(["data", "inspect", "--dataset", "casme2-spot", "--sheet", str(sheet), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "samples": 357,
        "subjects": 22,
        "emotions": {"negative": 126, "others": 82, "positive": 124, "surprise": 25},
        "kinds": {"micro": 57, "macro": 300},
    }
