"""The one shard writer and reader (`data.shard_io`), the one manifest schema (`data.manifest`), atomic writes."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from audiolm_pl.data.manifest import FORMAT, ManifestError, ShardEntry, ShardManifest, read_manifest, write_manifest
from audiolm_pl.data.shard_io import (AudioDecodeError, BadSample, ShardWriter, decode_audio, decode_audio_window,
                                     iter_samples, raw_samples)
from audiolm_pl.fileio import atomic_output, atomic_write_json


def pcm16(samples: int, seed: int) -> np.ndarray:
    """(T,) float32 that 16-bit FLAC holds exactly (multiples of 1/32768)."""
    return np.random.default_rng(seed).integers(-20000, 20000, samples).astype(np.float32) / 32768


def test_audio_written_by_the_writer_reads_back_identically(tmp_path):
    clips = {"spk_a/utt0": pcm16(4000, 0), "spk_b/utt1-seg001": pcm16(1234, 1)}
    with ShardWriter(tmp_path / "audio-000000.tar") as writer:
        for key, audio in clips.items():
            writer.write_sample(key, {"speaker": key.split("/")[0], "duration": len(audio) / 16000}, audio=audio,
                                sample_rate=16000)
    with tarfile.open(tmp_path / "audio-000000.tar") as tar:  # the on-disk format every earlier reader knows
        assert tar.getnames() == ["spk_a/utt0.flac", "spk_a/utt0.json", "spk_b/utt1-seg001.flac", "spk_b/utt1-seg001.json"]
    samples = list(iter_samples(tmp_path, sample_rate=16000))
    assert [sample.key for sample in samples] == list(clips)
    for sample, (key, audio) in zip(samples, clips.items()):
        assert sample.sample_rate == 16000 and sample.audio.dtype == np.float32
        np.testing.assert_array_equal(sample.audio, audio)
        assert sample.meta == {"speaker": key.split("/")[0], "duration": len(audio) / 16000}
        assert sample.semantic is None and sample.acoustic is None
    with pytest.raises(AudioDecodeError, match="audio-000000.tar:spk_a/utt0 is 16000 Hz"):
        next(iter_samples(tmp_path, sample_rate=24000))


def test_a_window_reads_the_same_samples_as_the_whole_clip_and_the_same_errors(tmp_path):
    """The codec's crops read only their window (`decode_audio_window`); a wrong seek or length would shift them."""
    clip = pcm16(40000, 2)  # long enough that FLAC seeks across several blocks
    with ShardWriter(tmp_path / "audio-000000.tar") as writer:
        writer.write_sample("spk/utt", {"speaker": "spk"}, audio=clip, sample_rate=16000)
    raw = next(raw_samples([str(tmp_path / "audio-000000.tar")]))
    np.testing.assert_array_equal(decode_audio(raw, 16000), clip)
    for start, samples in ((0, 16000), (12345, 16000), (39000, 16000), (23999, 1)):
        window, length = decode_audio_window(raw, 16000, samples, lambda total: start)
        assert length == 40000
        np.testing.assert_array_equal(window, clip[start:start + samples])  # past the end: shorter, as a slice
    with pytest.raises(AudioDecodeError, match="audio-000000.tar:spk/utt is 16000 Hz"):
        decode_audio_window(raw, 24000, 16000, lambda total: 0)
    with pytest.raises(BadSample, match="audio-000000.tar:spk/utt: cannot decode"):
        decode_audio_window({**raw, "flac": raw["flac"][:50]}, 16000, 16000, lambda total: 0)


def test_tokens_written_by_the_writer_read_back_identically(tmp_path):
    rng = np.random.default_rng(0)
    semantic = rng.integers(0, 1000, 37).astype(np.int16)  # (T_s,)
    acoustic = rng.integers(0, 70000, (74, 4)).astype(np.int32)  # (T_a, Q)
    with ShardWriter(tmp_path / "tokens-000003.tar") as writer:
        writer.write_sample("clip", {"duration": 1.48}, semantic=semantic, acoustic=acoustic)
    with tarfile.open(tmp_path / "tokens-000003.tar") as tar:
        assert sorted(tar.getnames()) == ["clip.acoustic.npy", "clip.json", "clip.semantic.npy"]
    (sample,) = iter_samples(tmp_path / "tokens-000003.tar")
    assert sample.key == "clip" and sample.meta == {"duration": 1.48} and sample.audio is None
    assert sample.semantic.dtype == np.int16 and sample.acoustic.dtype == np.int32
    np.testing.assert_array_equal(sample.semantic, semantic)
    np.testing.assert_array_equal(sample.acoustic, acoustic)


def test_writing_the_same_samples_twice_gives_the_same_bytes(tmp_path):
    for name in ("one.tar", "two.tar"):
        with ShardWriter(tmp_path / name) as writer:
            writer.write_sample("k", {"n": 1}, audio=pcm16(800, 3), sample_rate=16000)
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_an_interrupted_shard_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError, match="disk gone"):
        with ShardWriter(tmp_path / "audio-000000.tar") as writer:
            writer.write_sample("first", {}, audio=pcm16(800, 0), sample_rate=16000)
            raise RuntimeError("disk gone")
    assert list(tmp_path.iterdir()) == []  # neither the shard nor its temporary file
    with pytest.raises(ValueError, match="holds a '.'"):
        with ShardWriter(tmp_path / "audio-000000.tar") as writer:
            writer.write_sample("a.b", {}, audio=pcm16(800, 0), sample_rate=16000)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_atomic_write_keeps_the_old_file_whole(tmp_path):
    target = atomic_write_json(tmp_path / "report.json", {"version": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as temporary:
            temporary.write_text('{"version": 2, "trunc')
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"version": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]


def test_manifest_round_trip_with_the_optional_token_keys(tmp_path):
    spec = {"kind": "acoustic", "sample_rate": 16000, "frame_rate": 50.0, "vocab_size": 1024, "num_quantizers": 8}
    manifest = ShardManifest(content="tokens", sample_rate=16000,
                             shards=[ShardEntry("tokens-000000.tar", 3, 4.5), ShardEntry("tokens-000001.tar", 2, 1.5)],
                             speakers=["a"], made_by={"command": "audiolm-pl tokenize"},
                             token_specs={"semantic": {**spec, "kind": "semantic"}, "acoustic": spec},
                             producers={"semantic": "s1", "acoustic": "a1"}, semantic_hash="s" * 16, codec_hash="c" * 16)
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["format"] == FORMAT and on_disk["content"] == "tokens"
    assert (on_disk["total_samples"], on_disk["total_seconds"]) == (5, 6.0)
    audio = ShardManifest(content="audio", sample_rate=24000, shards=[ShardEntry("audio-000000.tar", 1, 2.0)])
    write_manifest(tmp_path, audio)
    assert read_manifest(tmp_path) == audio
    assert not {"token_specs", "producers", "codec_hash"} & set(json.loads((tmp_path / "manifest.json").read_text()))
    with pytest.raises(ValueError, match="needs token_specs"):
        ShardManifest(content="tokens", sample_rate=16000, shards=[])


def test_version_1_manifests_users_hold_are_read(tmp_path):
    """What `data shards` and `tokenize` wrote before the one schema: users have shards made with them."""
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": "audiolm_pl.audio_shards/1", "sample_rate": 16000,
        "shards": [{"name": "audio-000000.tar", "samples": 4, "hours": 0.001}], "total_samples": 4,
        "total_hours": 0.001, "total_seconds": 3.6, "speakers": ["a", "b"], "made_by": {"max_seconds": 30.0}}))
    audio = read_manifest(tmp_path)
    assert (audio.content, audio.sample_rate, audio.speakers, audio.made_by) == ("audio", 16000, ["a", "b"], {"max_seconds": 30.0})
    assert audio.shards == [ShardEntry("audio-000000.tar", 4, pytest.approx(3.6))]
    specs = {"semantic": {"sample_rate": 16000, "vocab_size": 12}, "acoustic": {"sample_rate": 16000, "vocab_size": 64}}
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": "audiolm_pl.token_shards/1", "shards": [{"name": "tokens-000000.tar", "samples": 4}], "samples": 4,
        "hours": 0.001, "token_specs": specs, "semantic_spec": specs["semantic"], "acoustic_spec": specs["acoustic"],
        "semantic_hash": "s", "codec_hash": "c"}))
    tokens = read_manifest(tmp_path)
    assert (tokens.content, tokens.sample_rate, tokens.token_specs, tokens.codec_hash) == ("tokens", 16000, specs, "c")
    assert tokens.producers is None and tokens.total_samples == 4


@pytest.mark.parametrize("payload, found", [
    ({"shards": ["audio-000000.tar"], "samples": 4, "hours": 0.1, "sample_rate": 16000}, "format None"),
    ({"format": "audiolm_pl.audio_shards/0", "shards": []}, "format 'audiolm_pl.audio_shards/0'"),
])
def test_an_unknown_manifest_names_the_file_and_the_expected_schema(tmp_path, payload, found):
    """The superseded format (shards as bare names, no `format`) is refused, not guessed at."""
    from audiolm_pl.data.shard_paths import resolve_shards

    (tmp_path / "manifest.json").write_text(json.dumps(payload))
    (tmp_path / "audio-000000.tar").write_bytes(b"")
    with pytest.raises(ManifestError) as raised:
        resolve_shards(tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "manifest.json") in message and found in message
    assert f"expected {{'format': '{FORMAT}'" in message and "audiolm-pl data shards" in message


def test_a_manifest_missing_a_field_names_it(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, "content": "audio", "shards": []}))
    with pytest.raises(ManifestError, match=r"manifest.json: a 'audiolm_pl.shards/2' manifest .*'sample_rate'"):
        read_manifest(tmp_path)
