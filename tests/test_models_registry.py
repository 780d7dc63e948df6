"""Checks every registered model gets for free (after timm's tests/test_models.py).

Parametrised over ``list_models()``, so a model added to ``engines/models/__init__.py`` is
covered by forward, backward and cfg checks on the day it is registered, at the small size
its synthetic recipe builds it at (tests/model_zoo.py).
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from engines.errors import MerError
from engines.models import (
    ModelArgumentError,
    ModelCfg,
    UnknownModelError,
    create_model,
    is_model,
    list_models,
    model_entrypoint,
    register_model,
)
from tests.model_zoo import random_inputs, small_model
from training.trainer import _loss

MODEL_NAMES = list_models()


def _input_for(model: torch.nn.Module, batch: int = 4) -> torch.Tensor:
    """A random batch spanning the model's declared value range."""
    return random_inputs(model.cfg, batch)


def test_registry_knows_ststnet() -> None:
    assert "ststnet" in MODEL_NAMES
    assert MODEL_NAMES == sorted(MODEL_NAMES)
    assert is_model("ststnet") and not is_model("resnet50")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_has_no_nan_and_matches_features_then_head(name: str) -> None:
    model = small_model(name).eval()
    x = _input_for(model)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        head = model.forward_head(features)
    assert logits.shape == (4, model.num_classes)
    assert torch.isfinite(logits).all()
    assert torch.equal(head, logits)
    assert pre_logits.shape == (4, model.num_features)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    model = small_model(name).train()
    x = _input_for(model)
    target = torch.arange(x.shape[0]) % model.num_classes
    _loss(model, model(x), target, None).backward()
    params = dict(model.named_parameters())
    no_grad = [n for n, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    zero_grad = [n for n, p in params.items() if p.grad is not None and not p.grad.abs().sum() > 0]
    assert params and not no_grad and not zero_grad, (no_grad, zero_grad)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_cfg_declares_the_input_contract_labels_and_provenance(name: str) -> None:
    model = small_model(name)
    cfg = model.cfg
    assert isinstance(cfg, ModelCfg)
    assert cfg.name == name
    assert len(cfg.input_size) in (3, 4) and all(isinstance(v, int) and v > 0 for v in cfg.input_size)
    assert cfg.channel_order and len(cfg.channels) == cfg.input_size[-3]
    if cfg.clip is not None:  # a clip model's input is exactly what its ClipSpec makes
        assert tuple(cfg.input_size) == cfg.clip.sample_shape and tuple(cfg.channels) == cfg.clip.channels
    assert cfg.value_range[0] < cfg.value_range[1]
    assert cfg.motion
    assert model.num_classes == cfg.num_classes == len(cfg.label_names)
    assert cfg.source_url and cfg.paper and cfg.license_note and cfg.protocol
    # The cfg travels as JSON (export metadata, reports) and comes back equal.
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ModelCfg.from_dict(data) == cfg


def test_cfg_refuses_values_json_cannot_carry() -> None:
    cfg = create_model("ststnet").cfg
    bad = ModelCfg(**{**cfg.__dict__, "notes": object()})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        bad.to_dict()


def test_unknown_model_lists_the_known_names_and_suggests_one() -> None:
    with pytest.raises(UnknownModelError) as caught:
        create_model("ststnett")
    message = str(caught.value)
    assert "'ststnett'" in message and "did you mean 'ststnet'" in message
    assert all(name in message for name in MODEL_NAMES)
    assert isinstance(caught.value, MerError)  # the CLI prints it as one line


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_misspelt_option_fails_naming_the_accepted_ones(name: str) -> None:
    builder = model_entrypoint(name)
    accepted = inspect.signature(builder).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    with pytest.raises(ModelArgumentError) as caught:
        create_model(name, num_clases=4)
    assert "'num_clases'" in str(caught.value)
    assert all(option in str(caught.value) for option in accepted)


def test_none_options_fall_back_to_the_builder_defaults() -> None:
    model = create_model("ststnet", drop_rate=None, label_names=None)
    assert model.dropout.p == 0.5 and model.num_classes == 3


def test_registering_twice_or_with_kwargs_is_refused() -> None:
    def ststnet() -> torch.nn.Module:  # same name as the real one
        raise AssertionError("never built")

    def loose_model(**kwargs: object) -> torch.nn.Module:
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="registered twice"):
        register_model(ststnet)
    with pytest.raises(ValueError, match=r"\*\*kwargs"):
        register_model(loose_model)
    assert not is_model("loose_model")
