"""Bad config files fail with one line naming the file, the key and the expected form.

Real TOML files with one fault each (an unknown key, a wrong type, a value out of range,
values that contradict each other, a file that is not TOML or not text) go through the real
loaders of a stream profile (``mer stream`` / ``mer analyze``) and of a training recipe
(``mer train``), and the whole message is compared: what it says is the contract. Types are
taken as TOML wrote them: a quoted number is a string, ``8.0`` is not an integer, ``1`` is not
``true``. The commands refuse such a file before they bind a socket or read any data.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engines.errors import ConfigError
from streamer.cli import main as mer_main
from streamer.stream_config import load_stream_config
from training.recipes import load_recipe

QUEUE_SIZE = "key 'capture.queue_size': expected an integer greater than or equal to 1"

STREAM_PROFILE_FAULTS = {
    # unknown keys
    "misspelt key": ("[capture]\nqueue_sise = 8\n",
                     "key 'capture.queue_sise': unknown key (did you mean 'queue_size'?)"),
    "misspelt section": ("[captur]\nqueue_size = 8\n", "key 'captur': unknown key (did you mean 'capture'?)"),
    "key of no section": ("[metrics]\nverbose = true\n",
                          "key 'metrics.verbose': unknown key; known keys: enabled, host, port"),
    # wrong types
    "text for an integer": ('[capture]\nqueue_size = "ten"\n', f"{QUEUE_SIZE}, got 'ten'"),
    "quoted integer": ('[capture]\nqueue_size = "8"\n', f"{QUEUE_SIZE}, got '8'"),
    "float for an integer": ("[capture]\nqueue_size = 8.0\n", f"{QUEUE_SIZE}, got 8.0"),
    "boolean for an integer": ("[capture]\nqueue_size = true\n", f"{QUEUE_SIZE}, got True"),
    "table for an integer": ("[capture.queue_size]\nsize = 8\n", f"{QUEUE_SIZE}, got {{'size': 8}}"),
    "integer for a boolean": ("[metrics]\nenabled = 1\n", "key 'metrics.enabled': expected true or false, got 1"),
    "text for a boolean": ('[metrics]\nenabled = "yes"\n', "key 'metrics.enabled': expected true or false, got 'yes'"),
    "text for a number": ('[spot]\nring_seconds = "6"\n',
                          "key 'spot.ring_seconds': expected a number from 1.0 to 60.0, got '6'"),
    "number for text": ("[events]\nendpoint = 5556\n", "key 'events.endpoint': expected a string, got 5556"),
    "number for a path": ("[events]\njournal = 5\n", "key 'events.journal': expected a path (a string), got 5"),
    "number for a table": ("capture = 8\n", "key 'capture': expected a table, got 8"),
    "number in a table of text": ("[capture.network.options]\nrtsp_transport = 3\n",
                                  "key 'capture.network.options.rtsp_transport': expected a string, got 3"),
    # out of range
    "below the minimum": ("[capture]\nqueue_size = 0\n", f"{QUEUE_SIZE}, got 0"),
    "above the maximum": ("[metrics]\nport = 70000\n",
                          "key 'metrics.port': expected an integer from 0 to 65535, got 70000"),
    "at an excluded bound": ("[capture.network]\nread_timeout_s = 0\n",
                             "key 'capture.network.read_timeout_s': expected a number greater than 0, got 0"),
    "infinite": ("[capture.network]\nread_timeout_s = inf\n",
                 "key 'capture.network.read_timeout_s': expected a number greater than 0, got inf"),
    "not a number": ("[faces]\ndetect_interval_s = nan\n",
                     "key 'faces.detect_interval_s': expected a number greater than 0, got nan"),
    "not a choice": ('[capture]\ndrop_policy = "drop_all"\n',
                     "key 'capture.drop_policy': expected 'drop_oldest' or 'drop_newest', got 'drop_all'"),
    "values that contradict": ("[capture.reconnect]\ninitial_delay_s = 5.0\nmax_delay_s = 1.0\n",
                               "key 'capture.reconnect': max_delay_s (1.0) must be >= initial_delay_s (5.0)"),
    "two faults": ('[capture]\nqueue_size = 0\ndrop_policy = "x"\n', f"{QUEUE_SIZE}, got 0 (and 1 more problem)"),
}

RECIPE = 'model = "ststnet"\nepochs = 3\nbatch_size = 8\nlr = 0.001\n'
UNION = "an integer, a number, a string, true or false, a list of integers or a list of numbers"

RECIPE_FAULTS = {
    "required key missing": ('model = "ststnet"\nepochs = 3\nlr = 0.001\n',
                             "key 'batch_size': required key is missing"),
    "out of range": (RECIPE.replace("epochs = 3", "epochs = 0"),
                     "key 'epochs': expected an integer from 1 to 100000, got 0"),
    "excluded upper bound": (RECIPE + "momentum = 1.0\n",
                             "key 'momentum': expected a number greater than or equal to 0 and less than 1, got 1.0"),
    "text for a number": (RECIPE.replace("lr = 0.001", 'lr = "fast"'),
                          "key 'lr': expected a number greater than 0, got 'fast'"),
    "quoted optional integer": (RECIPE + 'lr_decay_epochs = "10"\n',
                                "key 'lr_decay_epochs': expected an integer greater than or equal to 1, got '10'"),
    "not a choice": (RECIPE + 'optimizer = "lion"\n', "key 'optimizer': expected 'adam', 'adamw' or 'sgd', got 'lion'"),
    "list too short": (RECIPE + "betas = [0.9]\n", "key 'betas': expected a list of 2 numbers, got [0.9]"),
    "list too long": (RECIPE + "betas = [0.9, 0.99, 0.999]\n",
                      "key 'betas': expected a list of 2 numbers, got [0.9, 0.99, 0.999]"),
    "wrong item": (RECIPE + 'betas = ["a", 0.9]\n', "key 'betas.0': expected a number, got 'a'"),
    "none of a union": (RECIPE + "[model_options]\nflip = {p = 1}\n",
                        f"key 'model_options.flip': expected {UNION}, got {{'p': 1}}"),
    "misspelt key": (RECIPE + "weight_decai = 0.1\n", "key 'weight_decai': unknown key (did you mean 'weight_decay'?)"),
}


def write(tmp_path: Path, text: str | bytes, name: str = "profile.toml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("fault", STREAM_PROFILE_FAULTS)
def test_stream_profile_fault_names_file_key_and_expected_form(fault, tmp_path):
    text, message = STREAM_PROFILE_FAULTS[fault]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_stream_config(path)
    assert str(refused.value) == f"{path}: {message}"


@pytest.mark.parametrize("fault", RECIPE_FAULTS)
def test_training_recipe_fault_names_file_key_and_expected_form(fault, tmp_path):
    text, message = RECIPE_FAULTS[fault]
    path = write(tmp_path, text, "recipe.toml")
    with pytest.raises(ConfigError) as refused:
        load_recipe("ststnet", path)
    assert str(refused.value) == f"{path}: {message}"


def test_unknown_recipe_key_lists_the_known_ones(tmp_path):
    path = write(tmp_path, RECIPE + "learning_rate = 0.1\n", "recipe.toml")
    with pytest.raises(ConfigError) as refused:
        load_recipe("ststnet", path)
    assert str(refused.value).startswith(f"{path}: key 'learning_rate': unknown key; known keys: model, epochs, "
                                         "batch_size, optimizer, lr, ")


@pytest.mark.parametrize(("content", "message"), [
    ("[capture\nqueue_size = 8\n",
     "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)"),
    ("[capture]\nqueue_size = 8\nqueue_size = 9\n", "not valid TOML: Cannot overwrite a value (at line 3, column 15)"),
    (b"[capture]\nqueue_size = 8 # \xff\xfe\n", "not a UTF-8 text file (line 2, byte 27)"),
])
def test_a_file_that_is_not_a_toml_text_says_where(content, message, tmp_path):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as refused:
        load_stream_config(path)
    assert str(refused.value) == f"{path}: {message}"


def test_a_missing_or_unreadable_profile(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_stream_config(tmp_path / "nope.toml")
    assert str(refused.value) == f"{tmp_path / 'nope.toml'}: cannot read config: No such file or directory"
    with pytest.raises(ConfigError) as refused:
        load_stream_config(tmp_path)
    assert str(refused.value) == f"{tmp_path}: cannot read config: Is a directory"


def test_shipped_profile_still_loads_strictly():
    """Strict types must not reject what mer ships (integers where a number is expected are fine)."""
    config = load_stream_config()
    assert config.capture.camera.fps == 0.0 and isinstance(config.capture.camera.fps, float)


def taken_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("where", ["stream profile", "spot profile"])
def test_mer_stream_refuses_a_bad_profile_before_binding_or_reading(where, tmp_path, capsys):
    """A bad spotting profile named by the stream profile is a config error as well, reported first."""
    spot = write(tmp_path, "[detect]\nsmoothing = 1\n", "spot.toml")
    profile = write(tmp_path, '[capture]\nqueue_size = "ten"\n' if where == "stream profile"
                    else f'[spot]\nprofile = "{spot}"\n')
    journal = tmp_path / "journal" / "events.jsonl"
    with taken_port() as events, taken_port() as metrics:
        status = mer_main(["-q", "stream", "--source", str(tmp_path / "no-such-video.mp4"), "--config", str(profile),
                           "--endpoint", f"tcp://127.0.0.1:{events.getsockname()[1]}",
                           "--metrics-port", str(metrics.getsockname()[1]), "--journal", str(journal)])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    expected = (f"{profile}: {QUEUE_SIZE}, got 'ten'" if where == "stream profile"
                else f"{spot}: key 'detect.smoothing': unknown key (did you mean 'smooth_s'?)")
    assert error == [f"mer stream: error: {expected}"]
    assert not journal.parent.exists()


def test_mer_train_refuses_a_bad_recipe_before_reading_data(tmp_path, capsys):
    recipe = write(tmp_path, RECIPE.replace("batch_size = 8", "batch_size = 8.5"), "recipe.toml")
    status = mer_main(["-q", "train", "--model", "ststnet", "--dataset", "megc2019-flow", "--root",
                       str(tmp_path / "no-such-dataset"), "--out", str(tmp_path / "run"), "--recipe", str(recipe)])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mer train: error: {recipe}: key 'batch_size': expected an integer greater than or equal to 1, got 8.5"]
    assert not (tmp_path / "run").exists()


# Values for the keys a schema requires; the defaults of all other keys are what is checked.
REQUIRED = {
    "TrainRecipe": {"model": "ststnet", "epochs": 1, "batch_size": 1, "lr": 0.1},
    "PretrainRecipe": {"model": "tldn"},
}


def config_schemas() -> list[type]:
    import streamer.front_end  # noqa: F401  (each import registers its schemas as subclasses)
    import streamer.spotting.params  # noqa: F401
    import streamer.stream_config  # noqa: F401
    import training.pretrain  # noqa: F401
    import training.recipes  # noqa: F401
    import training.synthetic.settings  # noqa: F401
    from engines.config import ConfigModel

    found, stack = [], [ConfigModel]
    while stack:
        for schema in stack.pop().__subclasses__():
            if schema.__module__.split(".")[0] in {"engines", "streamer", "training"}:  # not other tests' schemas
                found.append(schema)
            stack.append(schema)
    return sorted(set(found), key=lambda schema: schema.__name__)


@pytest.mark.parametrize("schema", config_schemas(), ids=lambda schema: schema.__name__)
def test_every_default_is_a_value_a_config_file_could_hold(schema):
    """Defaults are not revalidated at each load, so each one is checked here, strictly, once."""
    from engines.config import parse_config

    required = REQUIRED.get(schema.__name__, {})
    missing = [name for name, field in schema.model_fields.items() if field.is_required() and name not in required]
    assert not missing, f"add {schema.__name__}'s required keys {missing} to REQUIRED"
    defaults = schema.model_validate(required)
    assert parse_config(defaults.model_dump(mode="json"), schema, source=schema.__name__) == defaults
