"""``mer train --ray``: every LOSO fold of every run (seeds, recipes) as one Ray task.

A fold task runs exactly what a worker of the local pool runs (``training.trainer``'s
worker set-up, then ``train_fold``): one torch thread unless ``cpus_per_fold`` says more,
deterministic algorithms on, and a seed from the run's seed and the held-out subject only.
So with one CPU per fold the scores, weights and metrics are those of ``mer train
--workers N`` on one machine, bit for bit, whichever node a fold lands on (the same
library versions on every node assumed). Each task declares ``cpus_per_fold`` CPUs and
``gpus_per_fold`` GPUs, which Ray uses to place it.

The folds of all runs are submitted at once, so a cluster stays busy across seeds and
recipes. Results come back to the driver as each fold finishes, which saves it (the same
``FoldStore`` as a local run, so ``--resume`` works across the two). A fold whose worker or
node is lost is run again by Ray (``retries``); a fold that raises fails its run, not the
others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from engines.ray_cluster import TaskReporter, Tasks, cluster, describe_failure, ray
from training.protocol import Fold
from training.recipes import TrainRecipe
from training.trainer import FoldResult, _init_worker, _run_in_worker

__all__ = ["FoldJob", "run_folds_on_ray"]

log = logging.getLogger(__name__)


@ray.remote
def _fold_task(recipe: TrainRecipe, fold: Fold, data: tuple, threads: int, board, key: str) -> FoldResult:
    report = TaskReporter(board, key)
    _init_worker(recipe, *data)  # the local pool's worker set-up: one thread, deterministic algorithms
    if threads != 1:
        torch.set_num_threads(threads)
    result = _run_in_worker(fold)
    report.finish(1)
    return result


@dataclass
class FoldJob:
    """The folds of one run still to train, with what they train on."""

    name: str  # the run's name, for logs and errors
    recipe: TrainRecipe
    folds: Sequence[Fold]
    inputs: torch.Tensor
    labels: torch.Tensor
    subjects: Sequence[str]
    class_names: Sequence[str]
    on_result: Callable[[FoldResult], None]
    action_units: torch.Tensor | None = None  # AU targets for a recipe with au_loss_weight


def run_folds_on_ray(jobs: Sequence[FoldJob], *, address: str | None, cpus_per_fold: float = 1,
                     gpus_per_fold: float = 0, retries: int = 3, progress: bool = True,
                     on_poll=None) -> dict[str, list[FoldResult] | str]:
    """Train every fold of every job on the cluster at ``address`` (None: a new one on this machine).

    Returns, per job name, its results in fold order, or the one-line reason it failed.
    """
    results: dict[str, dict[str, FoldResult]] = {job.name: {} for job in jobs}
    failures: dict[str, str] = {}  # run -> why its first failed fold failed
    with cluster(address):
        tasks = Tasks(desc="LOSO", unit="fold", progress=progress, on_poll=on_poll)
        owners: dict[str, tuple[FoldJob, Fold]] = {}
        data_refs: dict[int, object] = {}  # one copy of each dataset in the object store
        for job in jobs:
            key = id(job.inputs)
            if key not in data_refs:
                data_refs[key] = ray.put((job.inputs, job.labels, list(job.subjects), tuple(job.class_names),
                                          job.action_units))
            for fold in job.folds:
                name = f"{job.name} fold {fold.test_subject}"
                owners[name] = (job, fold)
                ref = _fold_task.options(num_cpus=cpus_per_fold, num_gpus=gpus_per_fold, max_retries=retries,
                                         retry_exceptions=False).remote(job.recipe, fold, data_refs[key],
                                                                        max(1, int(cpus_per_fold)), tasks.board, name)
                tasks.submit(name, ref, 1)
        while tasks:
            name, value = tasks.next_finished()
            job, fold = owners.pop(name)
            if isinstance(value, FoldResult):
                results[job.name][fold.test_subject] = value
                job.on_result(value)  # saved even if another fold of the run failed: --resume keeps it
            else:
                reason = f"fold {fold.test_subject}: {describe_failure(value)}"
                failures.setdefault(job.name, reason)
                log.error("%s: %s", job.name, reason)
        tasks.close()
    return {job.name: failures[job.name] if job.name in failures
            else [results[job.name][fold.test_subject] for fold in job.folds] for job in jobs}
