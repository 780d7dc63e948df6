"""Models are chosen by name (``--model ststnet``): a registry of builders plus the cfg each carries.

After timm's ``register_model``/``create_model``: a model module decorates one small builder
function per variant; the function's name is the model name. Everything that must know what a
model expects (the online pipeline building its input, export writing metadata, reports writing
a model card) reads :class:`ModelCfg` from ``model.cfg`` instead of hard-coding it.

Builders take explicit keyword arguments only (no ``**kwargs``), so a misspelt option fails
here with the accepted names instead of being silently dropped. A model whose only variant is
its class registers ``class_builder(Class, "name")``: its options are the class's own.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from engines.clip_spec import ClipSpec
from engines.errors import MerError

__all__ = [
    "ModelArgumentError",
    "ModelCfg",
    "UnknownModelError",
    "class_builder",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "register_model",
]


class UnknownModelError(MerError, LookupError):
    """A model name that is not registered; the message lists the known names."""


class ModelArgumentError(MerError, TypeError):
    """An option the model's builder does not accept; the message lists the ones it does."""


@dataclass(frozen=True)
class ModelCfg:
    """What a model expects as input, what its outputs mean, and where it comes from.

    Input contract: ``input_size`` is the shape of one sample: (channels, height, width) for
    an image, (frames, channels, height, width) for a clip; ``channel_order`` and ``channels``
    say which plane is which; ``value_range`` is the range of the values fed in;
    ``mean``/``std`` are the per-channel normalisation applied *by the caller* before the
    model (None: none); ``motion`` describes how the input is made. ``clip`` is None for
    models fed the composite's flow image, else the :class:`~engines.clip_spec.ClipSpec`
    saying how aligned face crops of a clip become the input (``mer prepare``, the stream).
    """

    name: str
    # Input contract.
    input_size: tuple[int, ...]
    channel_order: str
    channels: tuple[str, ...]
    value_range: tuple[float, float]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    motion: str
    # Output.
    label_names: tuple[str, ...]
    # Provenance.
    source_url: str = ""
    paper: str = ""
    license_note: str = ""
    train_datasets: tuple[str, ...] = ()
    protocol: str = ""
    notes: str = ""
    clip: ClipSpec | None = None

    def __post_init__(self) -> None:
        if len(self.input_size) not in (3, 4):
            raise ValueError(f"{self.name}: input_size must be (C, H, W) or (T, C, H, W), got {self.input_size}")
        planes = self.input_size[-3]
        if len(self.channels) != planes:
            raise ValueError(f"{self.name}: {len(self.channels)} channel names for {planes} channels")
        if self.clip is not None and tuple(self.clip.sample_shape) != tuple(self.input_size):
            raise ValueError(f"{self.name}: clip spec makes samples of shape {self.clip.sample_shape}, "
                             f"input_size says {self.input_size}")
        if len(set(self.label_names)) != len(self.label_names) or not self.label_names:
            raise ValueError(f"{self.name}: label names must be unique and non-empty, got {self.label_names}")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for export metadata, manifests, reports).

        Refuses a value JSON cannot carry rather than writing a cfg that cannot be read back.
        """
        data = dataclasses.asdict(self)
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: model cfg is not JSON-serialisable: {exc}") from None
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCfg:
        """The cfg :meth:`to_dict` wrote (tuples and the clip spec restored)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in data.items():
            if key not in fields:
                continue  # a field a newer mer wrote; the contract fields are all known
            if key == "clip":
                value = None if value is None else ClipSpec.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            values[key] = value
        return cls(**values)


ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])

_builders: dict[str, Callable[..., nn.Module]] = {}


def register_model(builder: ModelFn) -> ModelFn:
    """Decorator: register ``builder`` under its function name."""
    name = builder.__name__
    if name in _builders:
        raise ValueError(f"model {name!r} is registered twice ({_builders[name].__module__}, {builder.__module__})")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()):
        raise ValueError(f"model builder {name!r} must not take **kwargs (a misspelt option would be lost)")
    _builders[name] = builder
    return builder


def class_builder(model_class: type[nn.Module], name: str) -> Callable[..., nn.Module]:
    """A builder named ``name`` that takes exactly ``model_class``'s keyword arguments, with its defaults
    and docstring, so that a model whose variant is its class registers it without restating them::

        mmnet = register_model(class_builder(MMNet, "mmnet"))
    """
    init = inspect.signature(model_class.__init__)
    parameters = [parameter for parameter in init.parameters.values() if parameter.name != "self"]

    def build(**options: Any) -> nn.Module:
        return model_class(**options)

    build.__name__ = build.__qualname__ = name
    build.__module__ = model_class.__module__
    build.__doc__ = model_class.__doc__
    build.__signature__ = init.replace(parameters=parameters, return_annotation=model_class)  # type: ignore[attr-defined]
    return build


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_builders)


def is_model(name: str) -> bool:
    return name in _builders


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; its signature lists the model's options."""
    builder = _builders.get(name)
    if builder is None:
        close = difflib.get_close_matches(name, _builders, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint}; known models: {', '.join(list_models())}")
    return builder


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; ``kwargs`` go to its builder.

    Keyword arguments whose value is None are dropped so that callers can pass optional CLI
    values straight through and get the builder's defaults.
    """
    builder = model_entrypoint(name)
    given = {key: value for key, value in kwargs.items() if value is not None}
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ModelArgumentError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    return builder(**given)
