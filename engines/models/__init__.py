"""Model architectures, chosen by name through :mod:`engines.models.registry`.

Every model module is imported here explicitly, so ``list_models()`` always knows all of them
(a registry that only sees the modules someone happened to import would miss models).
"""

from engines.models import biwoof  # noqa: F401  (registers "biwoof")
from engines.models import dstan  # noqa: F401  (registers "dstan")
from engines.models import dual_atme  # noqa: F401  (registers "dual_atme")
from engines.models import edmdbn  # noqa: F401  (registers "edmdbn")
from engines.models import hars_off_apexnet  # noqa: F401  (registers "hars_off_apexnet")
from engines.models import hars_ststnet  # noqa: F401  (registers "hars_ststnet")
from engines.models import lbp_top  # noqa: F401  (registers "lbp_top")
from engines.models import mmnet  # noqa: F401  (registers "mmnet")
from engines.models import off_apexnet  # noqa: F401  (registers "off_apexnet")
from engines.models import score_average  # noqa: F401  (registers "score_average")
from engines.models import ststnet  # noqa: F401  (registers "ststnet")
from engines.models import tldn  # noqa: F401  (registers "tldn")
from engines.models.registry import (
    ModelArgumentError,
    ModelCfg,
    UnknownModelError,
    create_model,
    is_model,
    list_models,
    model_entrypoint,
    register_model,
)

__all__ = [
    "ModelArgumentError",
    "ModelCfg",
    "UnknownModelError",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "register_model",
]
