"""Training recipes: the hyper-parameters of one model on one protocol, as a validated config.

Recipes live in ``configs/train/<name>.toml``; ``mer train`` loads the recipe named after
the model unless ``--recipe`` points at another file, and command-line flags override
single fields (``--epochs``, ``--seed``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from engines.config import ConfigModel, load_config

RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"


class TrainRecipe(ConfigModel):
    """How one LOSO fold is trained.

    Model selection is honest by construction: either a fixed number of epochs (the last
    epoch is kept), or, with ``validation_fraction > 0``, early stopping on a split of the
    fold's *training* subjects; the held-out subject is never looked at before the end.
    """

    model: str
    epochs: int = Field(ge=1, le=100_000)
    batch_size: int = Field(ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(gt=0)
    lr_schedule: Literal["constant", "cosine", "exponential"] = "constant"
    # Linear warm-up: epoch k < warmup_epochs runs at lr·(k+1)/(warmup_epochs+1), then the schedule
    # over the remaining ones (EDMDBN: 15 of 60). ``lr_gamma``: the exponential decay per epoch.
    warmup_epochs: int = Field(0, ge=0)
    lr_gamma: float = Field(0.9, gt=0, le=1)
    # Step the schedule after each of the first N epochs only, then hold the rate (MMNet's
    # public code: exponential decay over 50 of its epochs). None: every epoch.
    lr_decay_epochs: int | None = Field(None, ge=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    class_weighting: Literal["none", "balanced"] = "none"
    # Cross-entropy against (1 - e) on the true class and e / classes on every class (Szegedy et al.
    # 2016): a model cannot drive a tiny training set's loss to zero by growing its logits. Models
    # with their own training loss (Dual-ATME's focal loss) refuse it.
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # mixup (Zhang et al. 2018): each training batch is blended with a shuffled copy of itself,
    # x = m·x_i + (1 - m)·x_j with m ~ Beta(a, a) drawn per batch, and the loss blended the same way
    # (m·loss(y_i) + (1 - m)·loss(y_j)). On motion images the blend superposes two faces' motion.
    # 0 = off.
    mixup_alpha: float = Field(0.0, ge=0)
    # Action units as a second task (training.action_unit_targets): a training-only linear head on
    # the model's pre-logit features predicts each sample's FACS-coded AUs, and its binary
    # cross-entropy (mean over the coded samples and the AUs), times this weight, joins the class
    # loss. Samples without coding (SMIC) add nothing to it. 0 = off.
    au_loss_weight: float = Field(0.0, ge=0)
    validation_fraction: float = Field(0.0, ge=0, lt=1)
    patience: int = Field(50, ge=1)
    seed: int = 0
    # Stochastic weight averaging (Izmailov et al. 2018): keep the mean of the weights at the
    # end of each of the last N epochs (BatchNorm statistics recomputed on the training
    # samples) instead of the last epoch's. A fixed rule, so still no held-out choice; 0 = off.
    average_last_epochs: int = Field(0, ge=0)
    # Options for the model's builder (e.g. Dual-ATME's flip_prob). They are recorded with
    # the run, and ``mer evaluate`` / ``mer export`` rebuild the model with the same ones.
    model_options: dict[str, int | float | str | bool | list[int] | list[float]] = Field(default_factory=dict)
    # Fine-tuning: a state dict (e.g. written by ``mer pretrain``) loaded into every fold's
    # fresh model before training; tensors whose name or shape differ (a new head) are skipped.
    init_weights: str | None = None


def load_recipe(model: str, path: str | Path | None = None) -> TrainRecipe:
    """The recipe at ``path``, or the project's default recipe for ``model``."""
    recipe_path = Path(path) if path is not None else RECIPE_DIR / f"{model}.toml"
    return load_config(recipe_path, TrainRecipe)
