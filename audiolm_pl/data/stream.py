"""A deterministic, resumable, DDP-aware stream of batches from WebDataset tar shards.

Training streams are webdataset pipelines: the shard list is split by node (rank) and then by
dataloader worker, so no two readers share a shard; each reader *resamples* its shards forever;
an epoch is a fixed number of batches, so DDP ranks stay in step. Every random choice (which
shard, the shuffle buffer, the crop) comes from a generator seeded by (seed, epoch, rank, worker):
the same run gives the same batches. The loader's `state_dict` (epoch, batches handed out) goes
into the checkpoint's loop state, so a resumed run skips exactly the batches that the interrupted
one had already trained on.

Validation streams read every shard in order, deal the samples round-robin to ranks and
workers, and stop at a fixed count per rank (cycling if the set is small), so every rank
runs the same number of validation steps.

Setting `AUDIOLM_PL_READ_LOG=DIR` makes every training reader (rank, dataloader worker) list the samples it reads
in `DIR/reads-rank{R}-worker{W}.tsv` (`epoch<TAB>shard<TAB>key` a line), so a distributed run shows which shards
each rank read (docs/scaling.md).

A sample that cannot be read (`BadSample`: a corrupt FLAC or npy member) is skipped, counted and named once
(shard and key, a warning); the stream stops with `TooManyBadSamples` only when more than `max_bad_fraction`
of the samples it has read were bad (judged after `MIN_SAMPLES_BEFORE_JUDGING`, so one early bad sample
does not stop a run).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import lightning as L
from lightning.pytorch.callbacks import Callback
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from audiolm_pl.data.shard_io import BadSample, raw_samples, sample_location

log = logging.getLogger(__name__)

# make_example(raw_sample, rng) -> example dict, or None to drop the sample (too short); raises BadSample
# for a sample that cannot be read.
MakeExample = Callable[[dict, random.Random], Optional[dict]]
Collate = Callable[[list[dict]], dict]


MIN_SAMPLES_BEFORE_JUDGING = 20
BAD_SAMPLES_KEY = "bad_samples"  # in a training batch: samples its reader skipped since its previous batch
_named_bad_samples: set[str] = set()  # per process: training resamples shards, and validation reads them again
READ_LOG_VARIABLE = "AUDIOLM_PL_READ_LOG"  # a directory: each training reader lists the samples it reads there


class TooManyBadSamples(ValueError):
    """More than `max_bad_fraction` of the samples read were bad: the shards need rewriting."""


class BadSampleCounter:
    """Counts read and bad samples of one stream (in one process: a dataloader worker counts its own share); warns
    once per bad sample and process, and raises past the threshold."""

    def __init__(self, max_bad_fraction: float):
        self.max_bad_fraction = max_bad_fraction
        self.seen = 0
        self.bad = 0

    def read(self) -> None:
        self.seen += 1

    def skip(self, err: BadSample, where: str) -> None:
        self.bad += 1
        if where not in _named_bad_samples:
            _named_bad_samples.add(where)
            log.warning("skipping unreadable sample %s (%d bad of %d read so far)", err, self.bad, self.seen)
        if self.seen >= MIN_SAMPLES_BEFORE_JUDGING and self.bad > self.max_bad_fraction * self.seen:
            raise TooManyBadSamples(
                f"{self.bad} of {self.seen} samples read were unreadable (more than data.max_bad_fraction="
                f"{self.max_bad_fraction}); last: {err}. Rewrite the shards (audiolm-pl data shards) or raise the limit"
            )


def check_stream_fields(config) -> None:
    """The checks every `data:` block of a stream shares (audio and token data): one message per mistake."""
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise ValueError(f"data.batch_size must be a positive integer; got {config.batch_size}")
    if config.crop_seconds <= 0:
        raise ValueError(f"data.crop_seconds must be > 0 (seconds per training crop); got {config.crop_seconds}")
    if config.num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0; got {config.num_workers}")
    if config.val_samples < 1:
        raise ValueError(f"data.val_samples must be a positive integer; got {config.val_samples}")
    if not 0 <= config.max_bad_fraction <= 1:
        raise ValueError(f"data.max_bad_fraction must be between 0 and 1; got {config.max_bad_fraction}")


@dataclass
class StreamPosition:
    epoch: int = 0
    skip_batches: int = 0  # batches of `epoch` already consumed (resume)


class ShardStream(IterableDataset):
    def __init__(
        self,
        shards: list[str],
        make_example: MakeExample,
        collate: Collate,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        shuffle_buffer: int = 100,
        batches_per_epoch: int = 100,
        samples_per_rank: int = 64,
        num_workers: int = 0,
        max_bad_fraction: float = 0.1,
    ):
        super().__init__()
        self.shards = list(shards)
        self.make_example = make_example
        self.collate = collate
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.batches_per_epoch = batches_per_epoch  # per rank (train)
        self.samples_per_rank = samples_per_rank  # (validation)
        self.num_workers = num_workers
        self.bad_samples = BadSampleCounter(max_bad_fraction)  # over every pass of this stream (in this process)
        self.position = StreamPosition()

    # -- shard selection ---------------------------------------------------------------
    def check_readers(self, world: int, num_workers: int) -> None:
        """Refuse more readers than training shards; called in the main process before any worker starts."""
        if len(self.shards) < world * max(num_workers, 1):
            raise ValueError(
                f"{len(self.shards)} training shards cannot be split over {world} ranks x {num_workers} "
                f"dataloader workers; set data.num_workers to at most {len(self.shards) // max(world, 1)} "
                "or write more, smaller shards (--samples-per-shard)"
            )

    def _raw_val_samples(self, rank: int, world: int, worker: int, num_workers: int) -> Iterator[dict]:
        quota = self.samples_per_rank // num_workers + (worker < self.samples_per_rank % num_workers)
        produced = 0
        while produced < quota:
            seen_any = False
            for index, sample in enumerate(raw_samples(self.shards, handler=wds.warn_and_continue)):
                seen_any = True
                if index % world != rank or (index // world) % num_workers != worker:
                    continue
                yield sample
                produced += 1
                if produced >= quota:
                    return
            if not seen_any:
                raise ValueError(f"validation shards {self.shards[:3]} hold no samples")
            if produced == 0:  # a whole pass dealt this reader nothing: another pass would too (it would hang)
                raise ValueError(
                    f"validation shards {self.shards[:3]} hold {index + 1} samples, too few to deal one to each of "
                    f"{world} ranks x {num_workers} dataloader workers; write at least {world * num_workers} validation "
                    "samples, or set data.num_workers lower")

    def __len__(self) -> int:
        if self.train:
            return self.batches_per_epoch
        readers = max(self.num_workers, 1)
        quotas = [self.samples_per_rank // readers + (w < self.samples_per_rank % readers) for w in range(readers)]
        return sum(-(-quota // self.batch_size) for quota in quotas)

    # -- iteration --------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, num_workers = wds.utils.pytorch_worker_info()
        epoch = self.position.epoch if self.train else 0
        rng = random.Random(hash((self.seed, epoch, rank, worker, self.train)) & 0xFFFFFFFF)
        if not self.train:
            return iter(wds.DataPipeline(
                lambda: self._raw_val_samples(rank, world, worker, num_workers),
                self._examples(rng),
                wds.batched(self.batch_size, collation_fn=self.collate, partial=True),
            ))
        self.check_readers(world, num_workers)
        my_batches = self.batches_per_epoch // num_workers + (worker < self.batches_per_epoch % num_workers)
        # the DataLoader takes batches from workers round-robin: global batch i is worker i % W's
        skip = sum(1 for i in range(self.position.skip_batches) if i % num_workers == worker)
        return iter(wds.DataPipeline(
            wds.SimpleShardList(self.shards),
            wds.split_by_node,  # rank r of W keeps shards r, r + W, ...
            wds.split_by_worker,  # then worker w of N keeps every N-th of those: no two readers share a shard
            _resampled(rng),  # this reader's shards drawn with replacement, forever
            wds.tarfile_to_samples(handler=wds.warn_and_continue),
            _read_log(rank, worker, epoch),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng),
            self._examples(rng),
            wds.batched(self.batch_size, collation_fn=self.collate, partial=False),
            self._counting_bad_samples(),
            # a resumed epoch replays its first `skip` batches (same rng draws) and drops them
            lambda batches: itertools.islice(batches, skip, my_batches),
        ))

    def _examples(self, rng: random.Random) -> Callable[[Iterator[dict]], Iterator[dict]]:
        """A pipeline stage: raw samples -> examples; unreadable samples are skipped and counted, short ones dropped."""

        def stage(samples: Iterator[dict]) -> Iterator[dict]:
            for sample in samples:
                self.bad_samples.read()
                try:
                    example = self.make_example(sample, rng)
                except BadSample as err:
                    self.bad_samples.skip(err, sample_location(sample))
                    continue
                if example is not None:
                    yield example

        return stage


    def _counting_bad_samples(self) -> Callable[[Iterator[dict]], Iterator[dict]]:
        """A pipeline stage: each training batch carries the samples this reader skipped since its previous
        batch (`BAD_SAMPLES_KEY`), so the main process can count every worker's (`BadSampleProgress`)."""

        def stage(batches: Iterator[dict]) -> Iterator[dict]:
            reported = self.bad_samples.bad
            for batch in batches:
                batch[BAD_SAMPLES_KEY], reported = self.bad_samples.bad - reported, self.bad_samples.bad
                yield batch

        return stage


class BadSampleProgress(Callback):
    """Shows the training samples skipped as unreadable (this rank's, every worker's) in the progress bar and
    TensorBoard (`data/bad_samples`); the count is kept in checkpoints, so a resumed run goes on counting."""

    def __init__(self):
        self.total = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(batch, dict) and BAD_SAMPLES_KEY in batch:
            self.total += int(batch[BAD_SAMPLES_KEY])
            pl_module.log("data/bad_samples", float(self.total), prog_bar=True, on_step=True, on_epoch=False,
                          rank_zero_only=True)

    def state_dict(self) -> dict:
        return {"total": self.total}

    def load_state_dict(self, state_dict: dict) -> None:
        self.total = int(state_dict.get("total", 0))


def _resampled(rng: random.Random) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """A pipeline stage: the shards that reach it ({"url"}), drawn with replacement by `rng`, forever.
    (webdataset's `ResampledShards` draws from the whole list, before any split by node and worker.)"""

    def stage(shards: Iterator[dict]) -> Iterator[dict]:
        shards = list(shards)
        while True:
            yield rng.choice(shards)

    return stage


def _read_log(rank: int, worker: int, epoch: int) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """A pipeline stage that passes raw samples on; when `$AUDIOLM_PL_READ_LOG` names a directory, it first appends
    `epoch<TAB>shard<TAB>key` of each to `reads-rank{rank}-worker{worker}.tsv` there. These are the samples read from
    disk (the last few of an epoch may still sit in the shuffle buffer), for checking that readers share no shard."""
    directory = os.environ.get(READ_LOG_VARIABLE)

    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        if not directory:
            yield from samples
            return
        Path(directory).mkdir(parents=True, exist_ok=True)
        # appended, line-buffered: a rank's workers each own a file, and a killed run keeps what it had read
        with open(Path(directory) / f"reads-rank{rank}-worker{worker}.tsv", "a", buffering=1) as record:
            for sample in samples:
                record.write(f"{epoch}\t{sample['__url__']}\t{sample['__key__']}\n")
                yield sample

    return stage


class EpochLoader(DataLoader):
    """A DataLoader over a training `ShardStream` that knows where it stands: the epoch of each pass (Lightning only
    calls `set_epoch` on samplers) and the batches of that pass handed out so far.

    Lightning stores `state_dict()` in the checkpoint's loop state and calls `load_state_dict()` on resume, before
    its first `iter()`. The count is the batches trained on because Lightning does not prefetch from a loader whose
    length it knows (ours has `__len__`); the resume test against an uninterrupted run holds it to that. The dataset is
    copied to the workers at each `iter()`, so the position set there reaches them.
    """

    def __init__(self, stream: ShardStream):
        super().__init__(stream, batch_size=None, num_workers=stream.num_workers, persistent_workers=False)
        self._next = StreamPosition()  # where the next pass starts
        self._current: Optional[StreamPosition] = None  # where the pass in progress started
        self._served = 0  # batches of the pass in progress handed out

    def __iter__(self):
        position, self._next = self._next, StreamPosition(epoch=self._next.epoch + 1)
        self.dataset.position = position
        self._current, self._served = position, 0
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[dict]) -> Iterator[dict]:
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        """{"epoch", "batches": of that epoch, trained on}."""
        if self._current is None:
            return {"epoch": self._next.epoch, "batches": self._next.skip_batches}
        return {"epoch": self._current.epoch, "batches": self._current.skip_batches + self._served}

    def load_state_dict(self, state: dict) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        finished = batches >= self.dataset.batches_per_epoch  # a checkpoint at an epoch's end goes on with the next
        self._next = StreamPosition(epoch=epoch + 1) if finished else StreamPosition(epoch=epoch, skip_batches=batches)
        self._current = None


class StreamDataModule(L.LightningDataModule):
    """Train/val loaders over `ShardStream`s, for any config with the shared stream fields
    (train_shards, val_shards, batch_size, num_workers, shuffle_buffer, samples_per_epoch,
    val_samples, seed). Subclasses say how a raw sample becomes an example and how to batch."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def make_example(self, train: bool) -> MakeExample:
        raise NotImplementedError

    def collate(self, examples: list[dict]) -> dict:
        raise NotImplementedError

    def _stream(self, train: bool) -> ShardStream:
        from audiolm_pl.data.shard_paths import resolve_shards

        c = self.config
        return ShardStream(
            resolve_shards(c.train_shards if train else c.val_shards),
            self.make_example(train),
            self.collate,
            c.batch_size,
            train=train,
            seed=c.seed,
            shuffle_buffer=c.shuffle_buffer,
            batches_per_epoch=max(1, c.samples_per_epoch // c.batch_size),
            samples_per_rank=c.val_samples,
            num_workers=c.num_workers,
            max_bad_fraction=c.max_bad_fraction,
        )

    def setup(self, stage: str | None = None) -> None:
        """Refuse more dataloader workers than training shards here, in the main process: Lightning starts the
        validation workers (sanity check) before it asks for the training loader."""
        if stage in (None, "fit"):
            stream = self._stream(train=True)
            stream.check_readers(self.trainer.world_size if self.trainer else 1, stream.num_workers)

    def train_dataloader(self) -> DataLoader:
        stream = self._stream(train=True)
        stream.check_readers(self.trainer.world_size if self.trainer else 1, stream.num_workers)
        return EpochLoader(stream)

    def val_dataloader(self) -> DataLoader:
        stream = self._stream(train=False)
        stream.num_workers = min(self.config.num_workers, len(stream.shards))  # validation reads all shards
        return DataLoader(stream, batch_size=None, num_workers=stream.num_workers)
