"""Per-sample image-text scores of shards with any model this codebase loads (a run of ours or an imported one):
`contrastive data score SHARDS --model RUN_DIR --out OUT`, one score file per shard (data/scores.py).

A caption's similarity is what the model's loss scales into its logit, before the scale and the bias: the cosine
of the model's pair_embeddings (dot-product models: the normalised image and text embeddings; Llip: the image
vector the caption mixes from the mixture tokens, and the caption's embedding). A sample's score is the max over
its caption lines: the caption that describes its image best.

Samples are read, decoded and tokenized in loader workers (data.shard_batches) and encoded batch by batch under
the run's autocast on its device. Each shard's file is written atomically once the shard is done and then
forgotten, so memory holds at most one shard's rows per worker, whatever the number of shards. A rerun skips the
shards whose file exists (kill -9 included: an unfinished file never has its final name) and writes the same
bytes for the others: a shard's batches, and so its numbers, depend neither on the worker count nor on how the
shard list is split between processes.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from contrastive.distributed import pick_device
from contrastive.evaluate import checkpoints_to_evaluate, load_model, run_of
from contrastive.model import ContrastiveModel
from contrastive.step import autocast_dtype
from data.errors import DataError
from data.patterns import contiguous_slices, expand_patterns
from data.plural import count
from data.progress import ShardProgress
from data.scores import ScoreMetadata, read_metadata, score_table, scores_path, shard_keys_sha256, write_scores
from data.shard_batches import Pixels, ShardBatch, ShardBatches, ShardEnd, ShardItem, shard_batch_loader
from data.validate import label


@dataclass(frozen=True)
class ScoreJob:
    """What one scoring process does (the command, or one task of `contrastive submit score`'s job array)."""

    shards: list[str]  # shard files, already expanded (shard_list)
    model: str  # run dir or checkpoint, as given: the score files record it so
    out: str
    embeddings: bool = False
    batch_size: int = 256
    workers: int = 2
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class ScoreReport:
    shards: int  # given to this process
    already_scored: int  # of those, found with their score file and skipped
    samples: int = 0  # read from the shards scored now, skipped ones included
    skipped: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # shards that could not be read to their end: no file
    seconds: float = 0.0
    data_wait_seconds: float = 0.0  # of `seconds`, waiting for the loader's next batch

    @property
    def scored(self) -> int:
        return self.samples - sum(self.skipped.values())

    def summary(self, out: str) -> str:
        done = f"{count(self.shards - self.already_scored - len(self.unreadable), 'shard')} scored"
        if self.already_scored:
            done += f", {self.already_scored} already scored before"
        text = f"{done}: {self.scored} of {count(self.samples, 'sample')}"
        if self.skipped:
            text += f" ({sum(self.skipped.values())} skipped: {reasons(self.skipped)})"
        if self.seconds > 0:
            text += (f"; {self.scored / self.seconds:.1f} samples/s, waiting for data "
                     f"{100 * self.data_wait_seconds / self.seconds:.0f}% of the time")
        return f"{text}; score files in {out}"


def reasons(skipped: dict[str, int]) -> str:
    return ", ".join(f"{label(reason)}: {n}" for reason, n in sorted(skipped.items()))


def shard_list(patterns: Sequence[str]) -> list[str]:
    """Shard files of brace/glob patterns or folders; two shards of one name would need the same score file."""
    shards = expand_patterns(patterns, noun="shard pattern", allow_pipe=False)
    by_file: dict[Path, str] = {}
    for shard in shards:
        target = scores_path("", shard)
        if target in by_file:
            raise DataError(f"shards {by_file[target]} and {shard} would both be scored into OUT/{target}: score "
                            "files are named after the shard, so score shards of one name into separate --out folders")
        by_file[target] = shard
    return shards


def check_out_dir(out: str) -> None:
    if Path(out).exists() and not Path(out).is_dir():
        raise DataError(f"--out {out} is a file, not a folder for score files")


def model_checkpoint(model: str) -> tuple[Path, Path]:
    """(run dir, checkpoint) of a run dir (its latest checkpoint) or of a checkpoint file."""
    run_dir, checkpoints = checkpoints_to_evaluate(Path(model), all_checkpoints=False)
    return run_dir, checkpoints[0]


def pending_shards(job: ScoreJob) -> list[str]:
    """The shards without a score file yet. An existing file of another model, of a shard that has changed since,
    or with or without embeddings where this run asks otherwise is refused: mixing them in one folder would give
    numbers that cannot be compared."""
    pending = []
    for shard in job.shards:
        path = scores_path(job.out, shard)
        if not path.exists():
            pending.append(shard)
            continue
        metadata, has_embeddings = read_metadata(path)
        problem = None
        if not _same_model(metadata.model, job.model):
            problem = f"it scores model {metadata.model}, this run {job.model}"
        elif metadata.shard_bytes != os.path.getsize(shard):
            problem = (f"it scores a shard of {metadata.shard_bytes} bytes and {shard} has {os.path.getsize(shard)} "
                       "now")
        elif has_embeddings != job.embeddings:
            problem = f"it was written {'with' if has_embeddings else 'without'} --embeddings"
        if problem:
            raise DataError(f"{path} exists but does not belong to this run: {problem}. Delete it to score {shard} "
                            "again, or score into another --out folder")
    return pending


def _same_model(recorded: str, given: str) -> bool:
    return recorded == given or Path(recorded).resolve() == Path(given).resolve()


def score_shards(job: ScoreJob, progress: Optional[bool] = None) -> ScoreReport:
    """Score the shards without a score file; raises DataError after the others are written if a shard could not
    be read to its end (it gets no file, so a rerun tries it again)."""
    check_out_dir(job.out)
    if job.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda but no CUDA device is available here; use --device auto or cpu")
    run_dir, checkpoint = model_checkpoint(job.model)
    todo = pending_shards(job)
    report = ScoreReport(shards=len(job.shards), already_scored=len(job.shards) - len(todo))
    if not todo:
        return report
    for shard in todo:
        _remove_stale_temp_files(scores_path(job.out, shard))
    run = run_of(run_dir, checkpoint, [])
    device = pick_device(job.device)
    model, _ = load_model(run, checkpoint, device)
    model.eval()
    image = run.cfg.model.image
    dataset = ShardBatches(todo, Pixels(image.image_size, image.resize), run.tokenizer, job.batch_size)
    loader = shard_batch_loader(dataset, job.workers, pin_memory=device.type == "cuda")
    encoder = _Encoder(model, device, autocast_dtype(run.cfg.train.precision), job.batch_size, job.embeddings)
    open_shards: dict[int, _ShardRows] = {}
    start = time.perf_counter()
    with ShardProgress(len(todo), "score", progress) as bar:
        for item, waited in _timed(loader):
            report.data_wait_seconds += waited
            if isinstance(item, ShardBatch):
                open_shards.setdefault(item.shard, _ShardRows()).add(*encoder(item))
                bar.sample(len(item.keys))
                continue
            bar.sample(sum(item.skipped.values()))
            _finish_shard(todo[item.shard], item, open_shards.pop(item.shard, _ShardRows()), job, report)
            bar.shard_done()
    report.seconds = time.perf_counter() - start
    if report.unreadable:
        raise DataError(f"{count(len(report.unreadable), 'shard')} could not be read to the end and got no score "
                        f"file ({'; '.join(report.unreadable)}); {report.summary(job.out)}")
    return report


def _timed(items: Iterable[ShardItem]) -> Iterator[tuple[ShardItem, float]]:
    """Each item with the seconds spent waiting for it."""
    iterator = iter(items)
    while True:
        started = time.perf_counter()
        item = next(iterator, None)
        if item is None:
            return
        yield item, time.perf_counter() - started


@dataclass
class _ShardRows:
    """The scored samples of one shard so far, on the CPU."""

    keys: list[str] = field(default_factory=list)
    similarities: list[np.ndarray] = field(default_factory=list)  # float32 [captions] per sample
    image_embeddings: list[np.ndarray] = field(default_factory=list)  # float16 [D] per sample (with --embeddings)
    text_embeddings: list[np.ndarray] = field(default_factory=list)  # float16 [captions, D] per sample

    def add(self, keys: list[str], similarities: list[np.ndarray], image_embeddings: list[np.ndarray],
            text_embeddings: list[np.ndarray]) -> None:
        self.keys += keys
        self.similarities += similarities
        self.image_embeddings += image_embeddings
        self.text_embeddings += text_embeddings


class _Encoder:
    """One batch of a shard through the model: each sample's caption similarities (and embeddings)."""

    def __init__(self, model: ContrastiveModel, device: torch.device, dtype: Optional[torch.dtype], batch_size: int,
                 embeddings: bool):
        self.model, self.device, self.batch_size, self.embeddings = model, device, batch_size, embeddings
        self.dtype = dtype

    def __call__(self, batch: ShardBatch) -> tuple[list[str], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        captions = torch.tensor(batch.captions, device=self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            image_repr = self.model.encode_image(batch.images.to(self.device, non_blocking=True))
            text_repr = torch.cat([self.model.encode_text(chunk.to(self.device, non_blocking=True))
                                   for chunk in batch.tokens.split(self.batch_size)])
            # Row t pairs caption t with its own sample's image; pair_embeddings works in float32.
            image_vectors, text_vectors = self.model.pair_embeddings(
                image_repr.repeat_interleave(captions, dim=0), text_repr)
        similarities = (image_vectors * text_vectors).sum(dim=-1).cpu().numpy()
        per_sample = np.split(similarities, np.cumsum(batch.captions)[:-1])
        if not self.embeddings:
            return batch.keys, per_sample, [], []
        firsts = np.concatenate([[0], np.cumsum(batch.captions)[:-1]])
        best = torch.from_numpy(firsts + np.array([s.argmax() for s in per_sample])).to(self.device)
        # The image vector whose cosine is the score: dot-product models have one per image anyway; for Llip
        # it is the one the best caption mixes.
        image_embeddings = image_vectors[best].half().cpu().numpy()
        text_embeddings = np.split(text_vectors.half().cpu().numpy(), np.cumsum(batch.captions)[:-1])
        return batch.keys, per_sample, list(image_embeddings), text_embeddings


def _finish_shard(shard: str, end: ShardEnd, rows: _ShardRows, job: ScoreJob, report: ScoreReport) -> None:
    report.samples += len(end.keys)
    for reason, n in end.skipped.items():
        report.skipped[reason] = report.skipped.get(reason, 0) + n
    if end.error is not None:
        report.unreadable.append(end.error)
        tqdm.write(f"data: no score file for {shard}: {end.error}")
        return
    name = Path(shard).name
    metadata = ScoreMetadata(shard=name, shard_bytes=os.path.getsize(shard), shard_keys_sha256=shard_keys_sha256(
        end.keys), samples=len(end.keys), model=job.model, skipped=dict(sorted(end.skipped.items())))
    embeddings = (rows.image_embeddings, rows.text_embeddings) if job.embeddings else (None, None)
    path = scores_path(job.out, shard)
    write_scores(path, score_table(rows.keys, name, rows.similarities, *embeddings), metadata)
    skipped = f" ({sum(end.skipped.values())} skipped: {reasons(end.skipped)})" if end.skipped else ""
    tqdm.write(f"scored {name}: {len(rows.keys)} of {count(len(end.keys), 'sample')}{skipped} -> {path}")


def _remove_stale_temp_files(path: Path) -> None:
    """What a killed writer of `path` left (data.atomic's temp name); no other process writes this shard's file."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def split_job(job: ScoreJob, tasks: int) -> list[ScoreJob]:
    """At most `tasks` jobs, each a contiguous slice of the shard list (sizes differ by at most one)."""
    return [dataclasses.replace(job, shards=job.shards[s.start:s.stop])
            for s in contiguous_slices(len(job.shards), tasks)]

