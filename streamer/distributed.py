"""``mer analyze --ray``: recorded footage on a Ray cluster, with the single machine's outputs.

Every video is one task; a video longer than two chunks is split into overlapping chunks
(:mod:`streamer.chunks`), one task each, and merged back into exactly what one pass over it
writes. Where two neighbouring chunks never reached the same state, they run again as one
chunk. Tasks take one CPU each; a task whose worker or node is lost is run again by Ray
(up to ``retries`` times) and named in the log. A video whose task fails for good keeps what
its earlier chunks produced (like a video that fails midway on one machine) and the other
videos carry on; the caller gets the number of videos that failed.

The driver reads only the files' headers; workers read the videos, the engine and the
spotting profile themselves, so those paths must be the same on every node (a shared file
system), and the outputs travel back to the driver, which writes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from engines.errors import InputError, MerError
from engines.ray_cluster import TaskReporter, Tasks, cluster, describe_failure, ray
from streamer.chunks import (ChunkPlan, ChunkResult, Span, analyze_chunk, check_chunking, merge_chunks,
                             merge_failed_borders, plan_chunks, unsynced_borders)
from streamer.commands.analyze import report_video, write_merged_video
from streamer.session import open_recognizer
from streamer.sources import FileSource
from streamer.spotting import load_spot_params
from streamer.stream_config import StreamConfig, spot_profile_path

__all__ = ["analyze_on_ray"]

log = logging.getLogger(__name__)

# Per worker process: engines already loaded (Ray reuses a worker for many tasks).
_RECOGNIZERS: dict[tuple[str, str], object] = {}


def _recognizer(config: StreamConfig, engine: str | None):
    key = (str(engine), config.engine.model_dump_json())
    if key not in _RECOGNIZERS:
        _RECOGNIZERS[key] = open_recognizer(config, engine)
    return _RECOGNIZERS[key]


@ray.remote(num_cpus=1)
def _chunk_task(path: str, span: Span, check_frames: frozenset[int], config: StreamConfig, engine: str | None,
                board, key: str) -> ChunkResult:
    report = TaskReporter(board, key)
    result = analyze_chunk(path, span, check_frames, config, _recognizer(config, engine), on_progress=report)
    report.finish()
    return result


@dataclass
class _Video:
    """One video's chunks and what came back from them."""

    path: Path  # as the user named it (what summary.json says)
    frames: int  # from the header (0: unknown), for the progress bar
    plan: ChunkPlan
    results: dict[Span, ChunkResult] = field(default_factory=dict)
    failures: dict[Span, str] = field(default_factory=dict)  # chunks whose task failed for good
    rounds: int = 1

    def done(self) -> bool:
        return all(span in self.results or span in self.failures for span in self.plan.spans)

    def work(self, span: Span) -> int:
        """Frames the chunk analyses, for the progress bar."""
        return max(1, (span.stop if span.stop is not None else self.frames) - span.start)


def analyze_on_ray(videos: list[Path], out: Path, config: StreamConfig, engine: Path | None, *, address: str | None,
                   chunk_s: float, overlap_s: float, subject: str = "", progress: bool = True, retries: int = 3,
                   on_poll=None) -> int:
    """Analyse ``videos`` on the cluster at ``address`` (None: a new one on this machine) into
    ``out/<video name>/``; returns how many videos failed (see the module doc)."""
    if config.capture.loop:
        raise InputError("capture.loop makes a file endless: it cannot be analysed with --ray")
    check_chunking(chunk_s, overlap_s)
    config = _with_absolute_paths(config)
    load_spot_params(spot_profile_path(config.spot.profile))  # a bad profile fails here, not on every worker
    engine_path = None if engine is None else str(Path(engine).resolve())
    failed = 0
    jobs: list[_Video] = []
    for path in videos:
        try:
            with FileSource(path, config.capture) as source:
                plan = plan_chunks(source.frame_count, source.fps or 30.0, chunk_s=chunk_s, overlap_s=overlap_s)
                jobs.append(_Video(path, source.frame_count, plan))
        except MerError as exc:
            failed += 1
            log.error("%s", exc)
    with cluster(address):
        tasks = Tasks(desc="analyze", unit="frame", progress=progress, on_poll=on_poll)
        config_ref = ray.put(config)
        owners: dict[str, tuple[_Video, Span]] = {}

        def submit(job: _Video) -> None:
            for k, span in enumerate(job.plan.spans):
                if span not in job.results:
                    key = f"{job.path.name} {span}"
                    owners[key] = (job, span)
                    ref = _chunk_task.options(max_retries=retries, retry_exceptions=False).remote(
                        str(job.path.resolve()), span, job.plan.check_frames(k), config_ref, engine_path, tasks.board,
                        key)
                    tasks.submit(key, ref, job.work(span))

        for job in jobs:
            submit(job)
        while tasks:
            key, value = tasks.next_finished()
            job, span = owners.pop(key)
            if isinstance(value, ChunkResult):
                job.results[span] = value
            else:
                job.failures[span] = describe_failure(value)
                log.error("%s, %s: %s", job.path, span, job.failures[span])
            if job.done():
                again, ok = _finish(job, out, subject)
                if again:
                    submit(job)
                elif not ok:
                    failed += 1
        tasks.close()
    return failed


def _finish(job: _Video, out: Path, subject: str) -> tuple[bool, bool]:
    """Merge and write a video whose chunks are all back: (must chunks run again first, did it succeed)."""
    spans = list(job.plan.spans)
    failed_at = next((i for i, span in enumerate(spans) if span in job.failures), None)
    results = [job.results[span] for span in spans[:failed_at]]
    if failed_at is None:
        unsynced = unsynced_borders(results)
        if unsynced:
            log.info("%s: %s never reached the same state; analysing them again as one", job.path,
                     ", ".join(f"{spans[k]} and {spans[k + 1]}" for k in unsynced))
            job.plan = merge_failed_borders(job.plan, unsynced)
            job.rounds += 1
            return True, False
    elif not results or unsynced_borders(results):
        log.error("%s: nothing written (no chunk before the failed one could be merged)", job.path)
        return False, False
    merged = merge_chunks(results)
    if failed_at is not None:
        merged.error = f"{spans[failed_at]}: {job.failures[spans[failed_at]]}"
    log.info("%s: %d chunk(s), handed over at frames %s, %d round(s)", job.path, len(spans), merged.handovers,
             job.rounds)
    try:
        summary = write_merged_video(out / job.path.stem, job.path, merged, results[0].engine, subject)
    except MerError as exc:
        log.error("%s", exc)
        return False, False
    report_video(job.path, summary, out)
    return False, True


def _with_absolute_paths(config: StreamConfig) -> StreamConfig:
    """Workers start elsewhere: a spotting profile or engine given by a relative path is made absolute."""
    profile = config.spot.profile
    if profile.endswith(".toml") or "/" in profile:
        config = config.model_copy(update={"spot": config.spot.model_copy(
            update={"profile": str(Path(profile).resolve())})})
    if config.engine.path is not None:
        config = config.model_copy(update={"engine": config.engine.model_copy(
            update={"path": str(Path(config.engine.path).resolve())})})
    return config
