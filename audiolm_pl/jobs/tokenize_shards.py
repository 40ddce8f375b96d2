"""Audio shards -> token shards: the codec and the semantic tokenizer run once, LMs read the result.

Input shard `NAME-%06d.tar` becomes `tokens-%06d.tar` with the same sample keys, holding
    semantic.npy  (T_s,) int16/int32     acoustic.npy (T_a, Q) int16/int32
    json          {"semantic_spec", "acoustic_spec", "semantic_hash", "codec_hash", "producers",
                   "duration", "speaker", "text", "source", "offset"}
plus `manifest.json` (`data.manifest`: shards, sample counts, seconds, token_specs, hashes, producers). The hashes
name the checkpoint files; `producers` ({"semantic", "acoustic"} -> `identity()`) names what made
the tokens whatever file they came from, and LMs trained on the shards carry it (tokens.py).

It is a Lightning predict loop, so `strategy=ddp` spreads input shards over devices: rank r
takes shards r, r + world, ... Shards are read with `data.shard_io.iter_samples` and written with
its `ShardWriter` (under a temporary name, renamed when whole); a rerun skips shards that exist.
`tokenize.json`, written first, records which checkpoints and specs made the directory; a run with
other ones is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import lightning as L
import numpy as np
import torch
import webdataset as wds
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset

from audiolm_pl.data.manifest import ShardEntry, ShardManifest, read_manifest, write_manifest
from audiolm_pl.data.shard_io import ShardJobReport, ShardWriter, iter_samples, raw_samples
from audiolm_pl.data.shard_paths import manifest_for, resolve_shards
from audiolm_pl.fileio import atomic_write_json
from audiolm_pl.tokens import AcousticCodec, SemanticTokenizer

log = logging.getLogger(__name__)


class TokenizeError(ValueError):
    """The tokenize job cannot run with these inputs (mismatched rates, a foreign output dir)."""


@dataclass
class TokenizeReport(ShardJobReport):
    hours: float = 0.0


def output_name(input_shard: str) -> str:
    """`.../audio-000012.tar` -> `tokens-000012.tar` (the shard number is kept)."""
    stem = Path(input_shard).stem
    return f"tokens-{stem.rsplit('-', 1)[-1]}.tar"


def _smallest_int(vocab: int):
    return np.int16 if vocab <= np.iinfo(np.int16).max + 1 else np.int32


class AudioShardBatches(IterableDataset):
    """This rank's input shards -> padded batches of one shard each, sorted by length.

    Batch: {"wav": (B, T_max) float32, "lengths": (B,) int64, "meta": [dict], "shard": str, "last": bool}.
    """

    def __init__(self, shards: list[str], out_dir: Path, sample_rate: int, batch_size: int):
        super().__init__()
        self.shards, self.out_dir = shards, out_dir
        self.sample_rate, self.batch_size = sample_rate, batch_size

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, num_workers = wds.utils.pytorch_worker_info()
        mine = self.shards[rank::world][worker::num_workers]
        for shard in mine:
            if (self.out_dir / output_name(shard)).exists():
                continue
            clips = sorted(iter_samples(shard, self.sample_rate), key=lambda sample: len(sample.audio))
            if not clips:
                yield {"wav": torch.zeros(0, 0), "lengths": torch.zeros(0, dtype=torch.long), "meta": [], "shard": shard, "last": True}
                continue
            for start in range(0, len(clips), self.batch_size):
                part = clips[start : start + self.batch_size]
                wav = torch.zeros(len(part), max(len(clip.audio) for clip in part))  # (B, T_max)
                for row, clip in enumerate(part):
                    wav[row, : len(clip.audio)] = torch.from_numpy(clip.audio)
                yield {"wav": wav, "lengths": torch.tensor([len(clip.audio) for clip in part]),
                       "meta": [{"key": clip.key, **clip.meta} for clip in part],
                       "shard": shard, "last": start + self.batch_size >= len(clips)}


class TokenizeModule(L.LightningModule):
    """Holds both tokenizers; `predict_step` turns a padded wav batch into per-clip tokens."""

    def __init__(self, codec: AcousticCodec, tokenizer: SemanticTokenizer):
        super().__init__()
        self.codec, self.tokenizer = codec.eval(), tokenizer.eval()

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_index: int) -> list[dict]:
        if batch["wav"].numel() == 0:
            return []
        wav = batch["wav"].to(self.device)  # (B, T_max)
        semantic_spec, acoustic_spec = self.tokenizer.token_spec, self.codec.token_spec
        clips = []
        for row, length in enumerate(batch["lengths"].tolist()):
            # each clip at its own length, as `AudioLM` encodes a prompt: a non-causal codec (the frame codec) or
            # feature model (an SSL / HF transformer, which attends over the whole input) would read the padding
            clip = wav[row : row + 1, :length]  # (1, T)
            codes = self.codec.encode(clip).cpu()[0]  # (T_a', Q)
            ids = self.tokenizer.encode(clip).cpu()[0]  # (T_s',)
            clips.append({
                "semantic": ids[: semantic_spec.num_frames(length)].numpy(),  # (T_s,)
                "acoustic": codes[: acoustic_spec.num_frames(length)].numpy(),  # (T_a, Q)
                "seconds": length / acoustic_spec.sample_rate,
            })
        return clips


class TokenShardWriter(BasePredictionWriter):
    """Collects the clips of each input shard and writes its token shard (`ShardWriter`) when whole."""

    def __init__(self, out_dir: Path, header: dict):
        super().__init__(write_interval="batch")
        self.out_dir, self.header = out_dir, header
        self.pending: dict[str, list[tuple[dict, dict]]] = {}
        self.written = 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.pending.setdefault(batch["shard"], []).extend(zip(batch["meta"], prediction))
        if batch["last"]:
            self._write(batch["shard"], sorted(self.pending.pop(batch["shard"]), key=lambda item: item[0]["key"]))

    def _write(self, shard: str, clips: list[tuple[dict, dict]]) -> None:
        semantic_dtype = _smallest_int(self.header["semantic_spec"]["vocab_size"])
        acoustic_dtype = _smallest_int(self.header["acoustic_spec"]["vocab_size"])
        with ShardWriter(self.out_dir / output_name(shard)) as writer:
            for meta, clip in clips:
                info = {**self.header, "duration": clip["seconds"], "speaker": meta.get("speaker", ""),
                        "text": meta.get("text", ""), "source": meta.get("source", ""), "offset": meta.get("offset", 0.0)}
                writer.write_sample(meta["key"], info, semantic=clip["semantic"].astype(semantic_dtype),
                                    acoustic=clip["acoustic"].astype(acoustic_dtype))
        self.written += 1


def check_inputs(codec: AcousticCodec, tokenizer: SemanticTokenizer, in_shards: str) -> None:
    """Both tokenizers must read audio at the shards' rate; codec frames must align with semantic ones."""
    manifest = manifest_for(in_shards)
    rates = {"codec": codec.sample_rate, "semantic tokenizer": tokenizer.sample_rate}
    if manifest is not None:
        rates[f"audio shards {in_shards}"] = manifest.sample_rate
    if len(set(rates.values())) != 1:
        raise TokenizeError(f"sample rates differ: {rates}; resample the shards or use matching checkpoints")
    try:
        codec.token_spec.whole_frame_ratio(tokenizer.token_spec)
    except ValueError as err:
        raise TokenizeError(f"codec and semantic tokenizer: {err}; their frames must align for crops to cover "
                            "the same audio in both token streams") from None


def claim_output(out_dir: Path, header: dict) -> None:
    """Record which checkpoints make `out_dir`, or refuse if other ones made it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    claim = out_dir / "tokenize.json"
    if claim.exists():
        existing = json.loads(claim.read_text())
        # a claim from before `producers` was recorded: its file hashes alone decide
        differing = sorted(key for key in header if key in existing and existing[key] != header[key])
        if differing:
            details = "; ".join(f"{key}: {existing.get(key)!r} there, {header[key]!r} now" for key in differing)
            raise TokenizeError(f"{out_dir} holds token shards made by other checkpoints ({details}); "
                                "use a new output directory")
        return
    if any(out_dir.glob("tokens-*.tar")):
        raise TokenizeError(f"{out_dir} holds token shards without {claim.name}; refusing to append to them")
    atomic_write_json(claim, header, indent=2)


def scan_manifest(out_dir: Path, header: dict, in_shards: str) -> ShardManifest:
    """The manifest of the finished token shards of `out_dir`, from their json members (ranks and earlier runs
    wrote them, so no one process holds the counts)."""
    entries, speakers = [], set()
    for path in sorted(out_dir.glob("tokens-*.tar")):
        infos = [json.loads(raw["json"]) for raw in raw_samples([str(path)])]
        entries.append(ShardEntry(path.name, len(infos), round(sum(info["duration"] for info in infos), 3)))
        speakers |= {info["speaker"] for info in infos if info.get("speaker")}
    return ShardManifest(
        content="tokens", sample_rate=int(header["acoustic_spec"]["sample_rate"]), shards=entries,
        speakers=sorted(speakers), made_by={"command": "audiolm-pl tokenize", "input_shards": str(in_shards)},
        token_specs={"semantic": header["semantic_spec"], "acoustic": header["acoustic_spec"]},
        producers=header["producers"], semantic_hash=header["semantic_hash"], codec_hash=header["codec_hash"],
    )


def tokenize_shards(
    codec: AcousticCodec,
    tokenizer: SemanticTokenizer,
    in_shards: str | Path,
    out_dir: str | Path,
    *,
    codec_hash: str,
    semantic_hash: str,
    batch_size: int = 8,
    trainer_kwargs: dict | None = None,
) -> TokenizeReport:
    """Tokenize every audio shard of `in_shards` into `out_dir` (skipping finished shards).

    trainer_kwargs: `lightning.Trainer` arguments (accelerator, devices, strategy, precision).
    """
    out_dir = Path(out_dir)
    check_inputs(codec, tokenizer, str(in_shards))
    header = {"semantic_spec": tokenizer.token_spec.to_dict(), "acoustic_spec": codec.token_spec.to_dict(),
              "semantic_hash": semantic_hash, "codec_hash": codec_hash,
              "producers": {"semantic": tokenizer.identity(), "acoustic": codec.identity()}}
    shards = resolve_shards(in_shards)
    claim_output(out_dir, header)
    skipped = sum((out_dir / output_name(s)).exists() for s in shards)
    writer = TokenShardWriter(out_dir, header)
    trainer = L.Trainer(**{"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                           "enable_checkpointing": False, **(trainer_kwargs or {})}, callbacks=[writer])
    loader = DataLoader(AudioShardBatches(shards, out_dir, codec.sample_rate, batch_size), batch_size=None)
    trainer.predict(TokenizeModule(codec, tokenizer), loader, return_predictions=False)
    trainer.strategy.barrier()
    if trainer.is_global_zero:
        write_manifest(out_dir, scan_manifest(out_dir, header, str(in_shards)))
    trainer.strategy.barrier()
    manifest = read_manifest(out_dir)
    log.info("tokenize: %d shards written, %d already there -> %s", writer.written, skipped, out_dir)
    return TokenizeReport(out_dir, writer.written, skipped, manifest.total_samples, manifest.total_seconds / 3600)
