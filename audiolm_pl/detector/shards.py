"""The detector's synthetic shards: our codec's resynthesis of real audio shards, and our generated wavs.

    audiolm-pl detector-shards OUT --codec runs/codec --real shards/speech/val --generated outputs/main/generated

writes `OUT/codec/codec-%06d.tar` (each real sample encoded and decoded by the codec, the same key, length and
metadata, plus "synthetic": "codec") and `OUT/generated/generated-%06d.tar` (every audio file under the folder,
less its first `--skip-seconds`: a continuation starts with its real prompt), each with its manifest. Point `data.synthetic_*_shards` at
`OUT/{codec,generated}` (or one of them). A real clip and its resynthesis say the same words in the same voice,
so the detector can only tell them apart by what the codec did to the sound.

The codec part is resumable (an output shard already there is kept); the generated part is rewritten whole.
A directory written from other inputs (another codec, folder or setting) is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from audiolm_pl.data.manifest import ShardEntry, ShardManifest, read_manifest, write_manifest
from audiolm_pl.data.shard_io import ShardJobReport, ShardWriter, iter_samples
from audiolm_pl.data.shard_paths import resolve_shards
from audiolm_pl.tokens import AcousticCodec


def resynthesis_name(index: int) -> str:
    """The output tar of the `index`-th input shard, numbered by position: the input names may repeat (a brace
    pattern over several directories of `audio-000000.tar`...)."""
    return f"codec-{index:06d}.tar"


@torch.inference_mode()
def resynthesize(codec: AcousticCodec, audio: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
    """audio (T,) -> codec.decode(codec.encode(audio)) (T,), with the first `num_quantizers` levels (None: all),
    cut or zero-padded to the input's length."""
    codes = codec.encode(audio[None])  # (1, T_a, Q)
    if num_quantizers is not None:
        codes = codes[:, :, :num_quantizers]  # (1, T_a, q)
    wav = codec.decode(codes)[0, : audio.shape[0]]  # (<= T,)
    return torch.nn.functional.pad(wav, (0, audio.shape[0] - wav.shape[0]))  # (T,)


def resynthesize_shards(codec: AcousticCodec, in_shards: str | Path, out_dir: str | Path, codec_hash: str,
                        num_quantizers: int | None = None) -> ShardJobReport:
    """Every sample of the audio shards `in_shards` through the codec -> `out_dir/codec-%06d.tar` + manifest."""
    out_dir = Path(out_dir)
    made_by = {"command": "audiolm-pl detector-shards", "input": str(in_shards), "codec_hash": codec_hash,
               "num_quantizers": num_quantizers}
    _claim(out_dir, made_by)
    if num_quantizers is not None and not 0 < num_quantizers <= codec.num_quantizers:
        raise ValueError(f"--num-quantizers {num_quantizers}: the codec has {codec.num_quantizers} levels")
    entries, written, skipped, speakers = [], 0, 0, set()
    for index, shard in enumerate(resolve_shards(in_shards)):
        path = out_dir / resynthesis_name(index)
        if path.exists():
            skipped += 1
        else:
            _write_resynthesis(codec, shard, path, num_quantizers)
            written += 1
        samples = list(iter_samples(path))
        speakers |= {sample.meta.get("speaker") for sample in samples if sample.meta.get("speaker")}
        entries.append(ShardEntry(path.name, len(samples), round(sum(len(s.audio) / s.sample_rate for s in samples), 3)))
    write_manifest(out_dir, ShardManifest(content="audio", sample_rate=codec.sample_rate, shards=entries,
                                          speakers=sorted(speakers), made_by=made_by))
    return ShardJobReport(out_dir, written, skipped, sum(entry.samples for entry in entries))


def _write_resynthesis(codec: AcousticCodec, shard: str, path: Path, num_quantizers: int | None) -> None:
    device = next(codec.parameters()).device if isinstance(codec, torch.nn.Module) else "cpu"
    with ShardWriter(path) as writer:
        for sample in iter_samples(shard, codec.sample_rate):
            wav = resynthesize(codec, torch.from_numpy(sample.audio).to(device), num_quantizers)
            meta = {**sample.meta, "synthetic": "codec", "source_shard": shard}
            writer.write_sample(sample.key, meta, audio=wav.clamp(-1, 1).cpu().numpy(), sample_rate=codec.sample_rate)


def _claim(out_dir: Path, made_by: dict) -> None:
    """Refuse to add to a directory another codec (or input, or level count) wrote."""
    manifest = read_manifest(out_dir) if out_dir.is_dir() else None
    if manifest is not None and manifest.made_by != made_by:
        raise ValueError(f"{out_dir} was written by {manifest.made_by}; this run is {made_by}. Use another directory "
                         "or delete it")
    out_dir.mkdir(parents=True, exist_ok=True)


def generated_shards(folder: str | Path, out_dir: str | Path, sample_rate: int, skip_seconds: float = 0.0,
                     samples_per_shard: int = 64) -> ShardJobReport:
    """Every audio file under `folder` (e.g. `audiolm-pl generate` outputs) -> `out_dir/generated-%06d.tar` +
    manifest, each file whole but its first `skip_seconds`: a continuation's file starts with its real prompt,
    which must not be labelled synthetic. Files left shorter than 0.1 s are passed over."""
    from audiolm_pl.data.audio import is_audio_path, load_mono

    folder, out_dir = Path(folder), Path(out_dir)
    files = sorted(path for path in folder.rglob("*") if path.is_file() and is_audio_path(path))
    if not files:
        raise FileNotFoundError(f"--generated {folder}: no audio files found")
    made_by = {"command": "audiolm-pl detector-shards", "generated": str(folder), "skip_seconds": skip_seconds}
    _claim(out_dir, made_by)
    skip = int(round(skip_seconds * sample_rate))
    clips = [(path, load_mono(path, sample_rate)[skip:]) for path in files]
    clips = [(path, audio) for path, audio in clips if len(audio) >= 0.1 * sample_rate]
    entries = []
    for start in range(0, len(clips), samples_per_shard):
        path = out_dir / f"generated-{start // samples_per_shard:06d}.tar"
        with ShardWriter(path) as writer:
            for source, audio in clips[start : start + samples_per_shard]:
                key = source.relative_to(folder).with_suffix("").as_posix().replace("/", "__").replace(".", "_")
                writer.write_sample(key, {"duration": len(audio) / sample_rate, "synthetic": "generated",
                                          "source": str(source)}, audio=audio, sample_rate=sample_rate)
        seconds = sum(len(audio) for _, audio in clips[start : start + samples_per_shard]) / sample_rate
        entries.append(ShardEntry(path.name, writer.samples, round(seconds, 3)))
    write_manifest(out_dir, ShardManifest(content="audio", sample_rate=sample_rate, shards=entries, made_by=made_by))
    return ShardJobReport(out_dir, len(entries), 0, sum(entry.samples for entry in entries))
