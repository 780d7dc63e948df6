from typing import Literal

import pytest
from pydantic import Field

from engines.config import ConfigModel, load_config
from engines.errors import ConfigError


class Window(ConfigModel):
    seconds: float = Field(gt=0, le=10)
    method: Literal["farneback", "dis"] = "dis"


class Profile(ConfigModel):
    name: str
    fps: int = Field(30, ge=1)
    window: Window


def _write(tmp_path, text):
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def test_valid_file_loads_with_defaults(tmp_path):
    config = load_config(_write(tmp_path, 'name = "cam"\n[window]\nseconds = 0.5\n'), Profile)
    assert config == Profile(name="cam", fps=30, window=Window(seconds=0.5, method="dis"))
    with pytest.raises(Exception):
        config.fps = 10  # frozen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "cam"\ncolour = 1\n[window]\nseconds = 0.5\n', "key 'colour': unknown key"),
        ('name = "cam"\n[window]\nseconds = 0.5\nsecs = 1\n', "key 'window.secs': unknown key"),
        ('name = "cam"\n[window]\nseconds = -1\n', "key 'window.seconds': expected a number greater than 0 and less than or equal to 10, got -1"),
        ('name = "cam"\nfps = "fast"\n[window]\nseconds = 1\n', "key 'fps': expected an integer greater than or equal to 1, got 'fast'"),
        ('name = "cam"\n[window]\nseconds = 1\nmethod = "tvl1"\n', "key 'window.method': expected 'farneback' or 'dis', got 'tvl1'"),
        ("[window]\nseconds = 1\n", "key 'name': required key is missing"),
    ],
)
def test_bad_values_name_file_key_and_expected_form(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, Profile)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml", Profile)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "name = \n"), Profile)


def test_several_problems_are_counted(tmp_path):
    with pytest.raises(ConfigError, match=r"\(and 1 more problem\)"):
        load_config(_write(tmp_path, 'name = 3\nextra = 1\n[window]\nseconds = 1\n'), Profile)
