"""Every config file the project ships validates against its schema.

A folder of ``configs/`` names the kind of config; a file there that no schema accepts
(an unknown key, a bad value) fails here before any user meets it.
"""

from pathlib import Path

import pytest

from engines.config import load_config
from streamer.spotting.params import SpotParams
from streamer.stream_config import StreamConfig
from training.recipes import TrainRecipe
from training.synthetic.settings import SynthSettings

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"train": TrainRecipe, "synth": SynthSettings, "stream": StreamConfig, "spot": SpotParams}
FILES = sorted(CONFIG_DIR.rglob("*.toml"))


def test_every_config_folder_has_a_schema():
    assert FILES, "no configs found"
    assert {path.parent.name for path in FILES} <= set(SCHEMAS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_shipped_config_is_valid(path):
    config = load_config(path, SCHEMAS[path.parent.name])
    if isinstance(config, TrainRecipe):
        # Recipes are found by model name; variants of a model's recipe are named <model>_<variant>.
        assert path.stem == config.model or path.stem.startswith(f"{config.model}_")


def test_the_stream_config_offers_every_runtime_backend():
    from typing import get_args

    from engines.runtime import BACKENDS
    from streamer.stream_config import EngineConfig

    assert get_args(EngineConfig.model_fields["backend"].annotation) == ("auto", *BACKENDS)
