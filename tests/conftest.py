"""Shared fixtures. Tests run on CPU, offline, with tiny configs; slow/GPU tests are opt-in."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow too (-m 'not gpu')")


def pytest_configure(config):
    """setup.cfg's addopts deselect slow and gpu tests; --runslow selects everything but the GPU tests."""
    if config.getoption("--runslow"):
        config.option.markexpr = "not gpu"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """Tiny models decode token by token: on a shared CPU one thread beats OpenMP spinning on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def untrained_codec():
    """`untrained_codec(name)`: the codec of `conf/codec/<name>.yaml`, built by `model.kind` through
    the registry with seed 0, in eval mode."""
    from audiolm_pl.codec.lightning import build_codec
    from audiolm_pl.training import load_stage_config

    def make(name: str):
        torch.manual_seed(0)
        return build_codec(load_stage_config("codec", name).model).eval()

    return make


def synthetic_voice(f0: float, seconds: float, sample_rate: int, seed: int):
    """A speech-like test signal: harmonics of `f0` with vibrato, syllable envelope and noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)))
    wav = 0.3 * voiced * syllables + 0.01 * rng.standard_normal(len(t))
    return wav.astype("float32")


@pytest.fixture(scope="session")
def audio_folders(tmp_path_factory):
    """Plain audio folders: 4 train speakers and 1 held-out speaker, text sidecars included."""
    import soundfile

    root = tmp_path_factory.mktemp("audio_folders")
    speakers = {"train": [("spk_a", 110.0), ("spk_b", 150.0), ("spk_c", 200.0), ("spk_d", 240.0)], "val": [("spk_v", 175.0)]}
    for split, voices in speakers.items():
        for speaker_index, (speaker, f0) in enumerate(voices):
            folder = root / split / speaker
            folder.mkdir(parents=True)
            for utt in range(4):
                seconds = 0.8 + 0.4 * utt
                wav = synthetic_voice(f0, seconds, 16000, seed=100 * speaker_index + utt)
                soundfile.write(folder / f"utt{utt}.wav", wav, 16000)
                (folder / f"utt{utt}.txt").write_text(f"utterance {utt} of {speaker}")
    return root


@pytest.fixture(scope="session")
def audio_shards(audio_folders, tmp_path_factory):
    """Audio shards made by the real `write_shards`: 4 train shards, 1 val shard, 16 kHz."""
    from types import SimpleNamespace

    from audiolm_pl.data.shards import write_shards

    out = tmp_path_factory.mktemp("audio_shards")
    write_shards(audio_folders / "train", out / "train", sample_rate=16000, samples_per_shard=4, progress=False)
    write_shards(audio_folders / "val", out / "val", sample_rate=16000, samples_per_shard=8, progress=False)
    return SimpleNamespace(train=out / "train", val=out / "val", sample_rate=16000)


def write_voice_shards(directory, speakers=(("a", 110.0), ("b", 170.0), ("c", 230.0)), per_speaker=3, seconds=2.5):
    """One audio shard of synthetic voices with text and made-up phone timings, written with the real
    `ShardWriter` and manifest (the phones are what the semantic stage's PNMI reads)."""
    from audiolm_pl.data.manifest import ShardEntry, ShardManifest, write_manifest
    from audiolm_pl.data.shard_io import ShardWriter

    shard = directory / "audio-000000.tar"
    with ShardWriter(shard) as writer:
        for s, (speaker, f0) in enumerate(speakers):
            for u in range(per_speaker):
                phones = [[i * 0.1, (i + 1) * 0.1, "aeiou"[(i + u) % 5]] for i in range(int(seconds * 10))]
                meta = {"duration": seconds, "sample_rate": 16000, "speaker": speaker, "text": f"utt {u}", "phones": phones}
                writer.write_sample(f"{speaker}_{u:03d}", meta, audio=synthetic_voice(f0, seconds, 16000, seed=10 * s + u),
                                    sample_rate=16000)
    write_manifest(directory, ShardManifest(
        content="audio", sample_rate=16000, shards=[ShardEntry(shard.name, writer.samples, writer.samples * seconds)],
        speakers=[speaker for speaker, _ in speakers], made_by={"command": "tests/conftest.py write_voice_shards"}))
    return directory


@pytest.fixture(scope="session")
def phone_shards(tmp_path_factory):
    """Audio shards with phone timings: 3 train speakers x 3 clips of 2.5 s, 1 val speaker x 2 clips."""
    from types import SimpleNamespace

    root = tmp_path_factory.mktemp("phone_shards")
    write_voice_shards(root / "train")
    write_voice_shards(root / "val", speakers=(("v", 150.0),), per_speaker=2)
    return SimpleNamespace(train=root / "train", val=root / "val", sample_rate=16000)


TINY_RUN_STEPS = ["codec", "semantic_tokenizer", "tokenize", "semantic_lm", "coarse_lm", "fine_lm", "generate"]


@pytest.fixture(scope="session")
def tiny_run(audio_shards, tmp_path_factory):
    """The main job after its corpus steps, on the synthetic shards: every stage trains 3 steps."""
    import shutil

    from audiolm_pl.jobs.main import MainJobConfig, run_main_job

    root = tmp_path_factory.mktemp("main_job")
    for split in ("train", "val"):
        shutil.copytree(getattr(audio_shards, split), root / "shards" / "speech" / split)
    config = MainJobConfig(workdir=str(root), size="tiny", real_speech=[], steps=TINY_RUN_STEPS, max_steps=3,
                           semantic_source="mfcc", semantic_clusters=8, prompts=1, prompt_seconds=1.0,
                           continuation_seconds=1.0, workers=1)
    run_main_job(config)
    return config


# -- token shards: the real tokenize job over `audio_shards` ----------------------------------------------

def make_codec(root):
    """(codec, checkpoint path): the real tiny codec (conf/codec/tiny.yaml), untrained, saved as a
    codec-stage checkpoint and read back with `load_codec` (as `audiolm-pl tokenize` does)."""
    from audiolm_pl.codec import load_codec
    from audiolm_pl.codec.lightning import build_codec
    from audiolm_pl.config import to_dict
    from audiolm_pl.training import load_stage_config

    config = load_stage_config("codec", "tiny")
    torch.manual_seed(0)
    model = build_codec(config.model)
    with torch.no_grad():  # the quantizer's data-dependent init, as training does, so encoding leaves the weights as saved
        model.encode(torch.from_numpy(synthetic_voice(150.0, 1.0, 16000, seed=0))[None])
    path = root / "codec.ckpt"
    torch.save({
        "state_dict": {f"model.{name}": value for name, value in model.state_dict().items()},
        "hyper_parameters": {"stage": "codec", "config": to_dict(config),
                             "token_specs": {"acoustic": model.token_spec.to_dict()}},
        "global_step": 0,
    }, path)
    return load_codec(path), path


def make_semantic_tokenizer(audio_dir, path):
    """The no-training baseline: k-means (12 ids) on MFCC frames of the training shards."""
    from audiolm_pl.data.shard_io import iter_samples
    from audiolm_pl.semantic import FeatureSource, FramePipeline, KMeansConfig, fit_tokenizer

    wavs = [torch.from_numpy(sample.audio) for sample in iter_samples(audio_dir, 16000)]
    frames = FramePipeline(FeatureSource(kind="mel"), 25.0)
    tokenizer = fit_tokenizer(frames, wavs, KMeansConfig(num_clusters=12, batch_size=256, epochs=3))
    tokenizer.save(path)
    return tokenizer


def run_tokenize(codec, tokenizer, hashes, source, out, **kwargs):
    from audiolm_pl.jobs.tokenize_shards import tokenize_shards

    return tokenize_shards(codec, tokenizer, source, out, codec_hash=hashes[0], semantic_hash=hashes[1],
                           batch_size=3, **kwargs)


_BUILT: dict[str, SimpleNamespace] = {}  # one tokenize run per session


def build_token_shards(audio_shards, tmp_path_factory) -> SimpleNamespace:
    """Token shards of the `audio_shards` fixture, made by the real tokenize job (once per session)."""
    from audiolm_pl.checkpoint import file_hash

    if str(audio_shards.train) in _BUILT:
        return _BUILT[str(audio_shards.train)]
    root = tmp_path_factory.mktemp("token_shards")
    codec, codec_path = make_codec(root)
    tokenizer = make_semantic_tokenizer(audio_shards.train, root / "semantic.safetensors")
    hashes = (file_hash(codec_path), file_hash(root / "semantic.safetensors"))
    reports = {split: run_tokenize(codec, tokenizer, hashes, getattr(audio_shards, split), root / split)
               for split in ("train", "val")}
    _BUILT[str(audio_shards.train)] = SimpleNamespace(
        train=root / "train", val=root / "val", codec=codec, tokenizer=tokenizer, hashes=hashes, reports=reports,
        audio=audio_shards, codec_path=codec_path, semantic_path=root / "semantic.safetensors")
    return _BUILT[str(audio_shards.train)]


@pytest.fixture(scope="session")
def token_shards(audio_shards, tmp_path_factory):
    return build_token_shards(audio_shards, tmp_path_factory)


def assert_run_logged(run_dir, tags) -> dict:
    """A training run's TensorBoard holds every scalar of `tags` (finite), a reconstruction's audio and its
    spectrogram image; returns the last scalars."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from audiolm_pl.jobs.report import last_scalars

    figures = last_scalars(run_dir)
    for tag in tags:
        assert tag in figures, tag
    assert all(np.isfinite(v) for v in figures.values())
    accumulator = EventAccumulator(str(next(run_dir.rglob("events.out.tfevents.*"))), size_guidance={"audio": 0, "images": 0})
    accumulator.Reload()
    assert "audio/0_reconstruction" in accumulator.Tags()["audio"]
    assert "spectrogram/0_reconstruction" in accumulator.Tags()["images"]
    return figures


def run_notebook(pipeline: Path, prompt: Path, workdir: Path, seconds: float = 0.5) -> list[dict]:
    """Executes notebooks/audiolm_inference.ipynb on `pipeline` and `prompt` in `workdir`; fails on any error
    output, else returns every code cell's outputs."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).parents[1] / "notebooks" / "audiolm_inference.ipynb", as_version=4)
    env = {"AUDIOLM_PIPELINE": str(pipeline), "AUDIOLM_PROMPT": str(prompt), "AUDIOLM_SECONDS": str(seconds),
           "AUDIOLM_EXPORT": str(workdir / "notebook_export")}
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs
