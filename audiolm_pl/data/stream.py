"""A deterministic, resumable, DDP-aware stream of batches from WebDataset tar shards.

Training streams split the shard list by node (rank) and then by dataloader worker, so no
two readers share a shard, and *resample* shards within their split forever; an epoch is a
fixed number of batches, so DDP ranks stay in step. Every random choice (which shard, the
shuffle buffer, the crop) comes from a generator seeded by (seed, epoch, rank, worker):
the same run gives the same batches, and a resumed run skips exactly the batches that the
interrupted one had already trained on.

Validation streams read every shard in order, deal the samples round-robin to ranks and
workers, and stop at a fixed count per rank (cycling if the set is small), so every rank
runs the same number of validation steps.

A sample that cannot be read (`BadSample`: a corrupt FLAC or npy member) is skipped, counted and named once
(shard and key, a warning); the stream stops with `TooManyBadSamples` only when more than `max_bad_fraction`
of the samples it has read were bad (judged after `MIN_SAMPLES_BEFORE_JUDGING`, so one early bad sample
does not stop a run).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import webdataset as wds
import lightning as L
from torch.utils.data import DataLoader, IterableDataset

log = logging.getLogger(__name__)

# make_example(raw_sample, rng) -> example dict, or None to drop the sample (too short); raises BadSample
# for a sample that cannot be read.
MakeExample = Callable[[dict, random.Random], Optional[dict]]
Collate = Callable[[list[dict]], dict]


MIN_SAMPLES_BEFORE_JUDGING = 20
_named_bad_samples: set[str] = set()  # per process: training resamples shards, and validation reads them again


class BadSample(ValueError):
    """A sample in a shard cannot be read; the message names shard and key. The stream skips it."""


class TooManyBadSamples(ValueError):
    """More than `max_bad_fraction` of the samples read were bad: the shards need rewriting."""


def sample_location(sample: dict) -> str:
    """`shard.tar:key` of a raw WebDataset sample, for messages."""
    return f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"


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

    def _reader_shards(self, rank: int, world: int, worker: int, num_workers: int) -> list[str]:
        self.check_readers(world, num_workers)
        by_node = self.shards[rank::world]  # split_by_node
        return by_node[worker::num_workers]  # split_by_worker

    def _raw_train_samples(self, rng: random.Random, shards: list[str]) -> Iterator[dict]:
        while True:  # resampled: draw shards with replacement, forever
            url = rng.choice(shards)
            yield from wds.tarfile_samples([{"url": url}], handler=wds.warn_and_continue)

    def _raw_val_samples(self, rank: int, world: int, worker: int, num_workers: int) -> Iterator[dict]:
        quota = self.samples_per_rank // num_workers + (worker < self.samples_per_rank % num_workers)
        produced = 0
        while produced < quota:
            seen_any = False
            samples = wds.tarfile_samples([{"url": url} for url in self.shards], handler=wds.warn_and_continue)
            for index, sample in enumerate(samples):
                seen_any = True
                if index % world != rank or (index // world) % num_workers != worker:
                    continue
                yield sample
                produced += 1
                if produced >= quota:
                    return
            if not seen_any:
                raise ValueError(f"validation shards {self.shards[:3]} hold no samples")

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
        if self.train:
            raw = self._raw_train_samples(rng, self._reader_shards(rank, world, worker, num_workers))
            raw = _shuffled(raw, self.shuffle_buffer, rng)
        else:
            raw = self._raw_val_samples(rank, world, worker, num_workers)
        my_batches = self.batches_per_epoch // num_workers + (worker < self.batches_per_epoch % num_workers)
        # the DataLoader takes batches from workers round-robin: global batch i is worker i % W's
        skip = sum(1 for i in range(self.position.skip_batches) if i % num_workers == worker) if self.train else 0
        emitted = 0
        for batch in self._batches(raw, rng):
            if self.train and emitted >= my_batches:
                return
            emitted += 1
            if emitted <= skip:
                continue
            yield batch

    def _batches(self, raw: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        pending: list[dict] = []
        for sample in raw:
            self.bad_samples.read()
            try:
                example = self.make_example(sample, rng)
            except BadSample as err:
                self.bad_samples.skip(err, sample_location(sample))
                continue
            if example is None:
                continue
            pending.append(example)
            if len(pending) == self.batch_size:
                yield self.collate(pending)
                pending = []
        if pending and not self.train:
            yield self.collate(pending)


def _shuffled(samples: Iterator[dict], buffer_size: int, rng: random.Random) -> Iterator[dict]:
    """Reservoir-style shuffle buffer driven by `rng` (so it is reproducible)."""
    if buffer_size <= 1:
        yield from samples
        return
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        index = rng.randrange(len(buffer))
        buffer[index], sample = sample, buffer[index]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


class EpochLoader(DataLoader):
    """A DataLoader over a `ShardStream` that advances the stream's epoch on every pass.

    Lightning only calls `set_epoch` on samplers; an iterable dataset needs its own counter.
    The dataset is copied to the workers at each `iter()`, so the new epoch reaches them.
    """

    def __init__(self, stream: ShardStream, start: StreamPosition):
        super().__init__(stream, batch_size=None, num_workers=stream.num_workers, persistent_workers=False)
        self._next_position = start

    def __iter__(self):
        self.dataset.position = self._next_position
        self._next_position = StreamPosition(epoch=self._next_position.epoch + 1)
        return super().__iter__()



def resume_position(trainer, batches_per_epoch: int) -> StreamPosition:
    """Where a (possibly resumed) Lightning trainer stands in its training stream.

    `epoch_progress.current.ready` counts epochs started, so the epoch in progress is one
    less; `current_epoch` would be one too far for a checkpoint saved when max_steps ended
    an epoch early. A checkpoint taken at the end of an epoch continues with the next one.
    """
    if trainer is None:
        return StreamPosition()
    epoch = max(0, int(trainer.fit_loop.epoch_progress.current.ready) - 1)
    done = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
    if done >= batches_per_epoch:
        return StreamPosition(epoch=epoch + 1)
    return StreamPosition(epoch=epoch, skip_batches=done)


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
        return EpochLoader(stream, resume_position(self.trainer, stream.batches_per_epoch))

    def val_dataloader(self) -> DataLoader:
        stream = self._stream(train=False)
        stream.num_workers = min(self.config.num_workers, len(stream.shards))  # validation reads all shards
        return DataLoader(stream, batch_size=None, num_workers=stream.num_workers)
