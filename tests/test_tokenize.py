"""The tokenize job: audio shards -> token shards, resumable, atomic, refusing foreign checkpoints.

The `token_shards` fixture (tests/conftest.py) runs the real `tokenize_shards` over the `audio_shards`
fixture with the baseline MFCC k-means semantic tokenizer and the real tiny codec (untrained: its codes
are a deterministic function of the audio).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import run_tokenize



def read_samples(tar_path):
    samples = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.partition(".")
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_token_shards_hold_aligned_tokens_specs_and_hashes(token_shards):
    audio_manifest = json.loads((token_shards.audio.train / "manifest.json").read_text())
    manifest = json.loads((token_shards.train / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == [f"tokens-{i:06d}.tar" for i in range(len(audio_manifest["shards"]))]
    assert manifest["total_samples"] == sum(s["samples"] for s in manifest["shards"]) == token_shards.reports["train"].samples > 0
    assert manifest["token_specs"]["acoustic"] == token_shards.codec.token_spec.to_dict()
    assert manifest["token_specs"]["semantic"] == token_shards.tokenizer.token_spec.to_dict()
    assert (manifest["codec_hash"], manifest["semantic_hash"]) == token_shards.hashes
    for shard in manifest["shards"]:
        for key, sample in read_samples(token_shards.train / shard["name"]).items():
            semantic = np.load(io.BytesIO(sample["semantic.npy"]))
            acoustic = np.load(io.BytesIO(sample["acoustic.npy"]))
            info = json.loads(sample["json"])
            assert semantic.ndim == 1 and acoustic.shape[1] == token_shards.codec.num_quantizers
            assert len(semantic) == int(info["duration"] * 25) and len(acoustic) == int(info["duration"] * 50)
            assert 0 <= semantic.min() and semantic.max() < 12 and acoustic.max() < token_shards.codec.codebook_size
            assert info["codec_hash"] == token_shards.hashes[0] and info["speaker"]


def test_tokens_equal_unbatched_encoding(token_shards):
    """Batching pads clips after their end; the codes of each clip must equal encoding it alone, exactly
    (the frame codec is not causal, so the job encodes each clip at its own length)."""
    import webdataset as wds

    from audiolm_pl.data.shard_io import decode_audio

    audio_tar = sorted(token_shards.audio.val.glob("*.tar"))[0]
    written = read_samples(token_shards.val / "tokens-000000.tar")
    differing, total = 0, 0
    for sample in wds.tarfile_samples([{"url": str(audio_tar)}]):
        wav = torch.from_numpy(decode_audio(sample, 16000))[None]  # (1, T)
        acoustic = np.load(io.BytesIO(written[sample["__key__"]]["acoustic.npy"]))  # (T_a, Q)
        alone = token_shards.codec.encode(wav)[0].numpy()  # (T_a', Q)
        assert len(alone) >= len(acoustic)
        differing += int((alone[: len(acoustic)] != acoustic).any(1).sum())
        total += len(acoustic)
    assert total > 0 and differing == 0, f"{differing} of {total} frames differ"


def test_rerun_skips_finished_shards_and_rewrites_missing_ones(token_shards, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(token_shards.train, out)
    before = read_samples(out / "tokens-000001.tar")
    (out / "tokens-000001.tar").unlink()
    report = run_tokenize(token_shards.codec, token_shards.tokenizer, token_shards.hashes, token_shards.audio.train, out)
    assert report.shards_written == 1 and report.shards_skipped == len(list(out.glob("tokens-*.tar"))) - 1
    assert read_samples(out / "tokens-000001.tar") == before
    assert not list(out.glob("*.tmp"))


def test_refuses_to_append_tokens_of_other_checkpoints(token_shards, tmp_path):
    from audiolm_pl.jobs.tokenize_shards import TokenizeError

    out = tmp_path / "copy"
    shutil.copytree(token_shards.train, out)
    with pytest.raises(TokenizeError, match="codec_hash"):
        run_tokenize(token_shards.codec, token_shards.tokenizer, ("0" * 16, token_shards.hashes[1]),
                 token_shards.audio.train, out)


def test_refuses_mismatched_sample_rates(token_shards, tmp_path):
    from audiolm_pl.jobs.tokenize_shards import TokenizeError

    codec_8k = SimpleNamespace(sample_rate=8000, frame_rate=50.0)  # only its rates are read before refusing
    with pytest.raises(TokenizeError, match="sample rates differ"):
        run_tokenize(codec_8k, token_shards.tokenizer, token_shards.hashes, token_shards.audio.train, tmp_path / "out")


def test_cli_has_tokenize_command():
    from audiolm_pl import cli
    from audiolm_pl.jobs import cli as jobs_cli

    args = cli.build_parser().parse_args(["tokenize", "--codec", "c.ckpt", "--semantic", "s.safetensors", "in", "out"])
    assert (args.codec, args.semantic, args.in_shards, args.out_shards, args.batch_size) == ("c.ckpt", "s.safetensors", "in", "out", 8)
    assert args.trainer == "cpu"
    assert args.func is jobs_cli._run_tokenize
