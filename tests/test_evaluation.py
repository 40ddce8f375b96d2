"""`audiolm-pl eval` and its judges: the real recognisers, speaker encoder and DNSMOS (the eval
extra) on espeak-ng clips, the figures' logic on hand-made inputs, and the command end to end on
the tiny pipeline of the `tiny_run` fixture (tests/conftest.py)."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from audiolm_pl.evaluation.text import error_rates, normalize_text

RATE = 16000
SENTENCE = "Hello, my name is John and I live in a small house near the park."  # tiny.en gets it word for word
OTHER_SENTENCE = "Please call me tomorrow morning before nine o clock."


@functools.lru_cache(maxsize=None)
def espeak(voice: str, text: str) -> tuple[np.ndarray, int]:
    """espeak-ng's own output: (T,) float32 at its native 22,050 Hz, so the judges must resample."""
    wav_bytes = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    wav, rate = soundfile.read(io.BytesIO(wav_bytes), dtype="float32")
    return wav, rate


@pytest.fixture(scope="session")
def whisper():
    from audiolm_pl.evaluation.asr import load_asr

    return load_asr("whisper")


@pytest.fixture(scope="session")
def sphinx():
    from audiolm_pl.evaluation.asr import load_asr

    return load_asr("sphinx")


@pytest.fixture(scope="session")
def resemblyzer():
    from audiolm_pl.evaluation.speaker import load_speaker_judge

    return load_speaker_judge("resemblyzer")


@pytest.fixture(scope="session")
def dnsmos():
    from audiolm_pl.evaluation.measures import DNSMOSJudge

    return DNSMOSJudge()


# -- text and WER ----------------------------------------------------------------------

@pytest.mark.parametrize("raw, normalised", [
    ("Hello, World!  It's 3 o'clock.", "hello world it's three o'clock"),
    ("'Quoted' words -- and dashes-between", "quoted words and dashes between"),
    ("1,250 people on the 21st; 3.5 and 100%", "one thousand two hundred fifty people on the twenty first three point five "
                                               "and one hundred percent"),
    ("Don\u2019t   SHOUT\n(please)", "don't shout please"),
    ("...", ""),
])
def test_normalize_text(raw, normalised):
    assert normalize_text(raw) == normalised


def test_error_rates_pool_edits_over_all_reference_words():
    rates = error_rates(["a b c d", "x", "anything"], ["A, b c d.", "e", "?!"])  # the third has no reference words
    assert rates.utterances == 2 and rates.reference_words == 5
    assert rates.wer == pytest.approx(1 / 5)  # a mean of per-utterance WERs would be 0.5
    assert error_rates(["x"], [""]) is None


# -- judges ----------------------------------------------------------------------------

def test_whisper_transcribes_an_english_clip(whisper):
    wav, rate = espeak("en", SENTENCE)
    transcript = whisper.transcribe(wav, rate)
    assert error_rates([transcript], [SENTENCE]).wer <= 0.15, transcript


def test_sphinx_returns_text_for_an_english_clip(sphinx):
    wav, rate = espeak("en", SENTENCE)
    assert normalize_text(sphinx.transcribe(wav, rate))  # words, not just noise markers


def test_resemblyzer_puts_one_voice_closer_than_another(resemblyzer):
    def embed(voice, text):
        return resemblyzer.embed(*espeak(voice, text))

    for voice, other in (("en-us", "en+f3"), ("en+f3", "en-us")):
        first, same_voice, other_voice = embed(voice, SENTENCE), embed(voice, OTHER_SENTENCE), embed(other, OTHER_SENTENCE)
        assert first @ same_voice > first @ other_voice + 0.1  # unit-norm embeddings: dot = cosine


def test_missing_judge_package_names_the_eval_extra(monkeypatch):
    from audiolm_pl.evaluation.asr import load_asr
    from audiolm_pl.evaluation.packages import MissingEvalPackage

    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import fails as if not installed
    with pytest.raises(MissingEvalPackage, match=r"whisper judge needs .*'faster_whisper'.*pip install -e \"\.\[eval\]\""):
        load_asr("whisper")


# -- speaker identification -------------------------------------------------------------

def test_speaker_identification_leaves_the_own_prompt_out():
    from audiolm_pl.evaluation.speaker import speaker_identification

    e1, e2, e3, e4 = np.eye(4)
    prompts = np.stack([e1, e2, e3, e3, e4])
    speakers = ["a", "a", "b", "b", "c"]
    tests = np.stack([
        e1 + 0.1 * e3,  # a: like its own prompt, but a's enrollment without it is e2 -> b wins
        e1 + e2,  # a: enrollment without prompt 1 is e1 -> correct
        e3,  # b: correct
        e2 + 2 * e3,  # b: its enrollment without prompt 3 scores 0.89, a's (e1 + e2) / 2 0.32 -> correct
        e4 + 0.2 * e1,  # c: a single utterance, enrolled on its own prompt -> correct
    ])
    result = speaker_identification(prompts, speakers, tests)
    assert result.correct == [False, True, True, True, True] and result.accuracy == pytest.approx(0.8)
    assert result.self_enrolled == ["c"] and result.num_speakers == 3
    assert result.cosine_own[0] == pytest.approx(0.0) and result.cosine_own[4] == pytest.approx(1 / np.sqrt(1.04))
    assert result.cosine_best_other[0] == pytest.approx(0.1 / np.sqrt(1.01))


def test_speaker_identification_with_one_speaker_is_trivial():
    from audiolm_pl.evaluation.speaker import speaker_identification

    result = speaker_identification(np.eye(2), ["a", "a"], np.array([[0.0, 1.0], [0.0, 1.0]]))
    assert result.correct == [True, True] and result.cosine_best_other == [None, None]
    assert result.cosine_own == [pytest.approx(1.0), pytest.approx(0.0)]


# -- speech, not a tone -----------------------------------------------------------------

def _stationary_sounds() -> dict[str, np.ndarray]:
    t = np.arange(3 * RATE) / RATE
    buzz = 0.3 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 40))
    return {
        "tone": 0.3 * np.sin(2 * np.pi * 150 * t),
        "buzz": buzz,
        "buzz at 4 Hz syllable rate": buzz * 0.5 * (1 + np.sin(2 * np.pi * 4 * t)),
        "white noise": 0.1 * np.random.default_rng(0).standard_normal(len(t)),
    }


def test_speech_measures_separate_speech_from_tones_buzz_and_noise(dnsmos):
    from audiolm_pl.evaluation.measures import speech_measures
    from audiolm_pl.evaluation.results import SPECTRAL_CHANGE_TARGET, VOICED_FRACTION_RANGE

    speech = [espeak(voice, SENTENCE) for voice in ("en", "en+f3")]
    speech_figures = [speech_measures(wav, rate) for wav, rate in speech]
    low, high = VOICED_FRACTION_RANGE
    for figures in speech_figures:
        assert figures.spectral_change_db > 10 and low <= figures.voiced_fraction <= high
    least_change = min(f.spectral_change_db for f in speech_figures)
    speech_mos = min(dnsmos(wav, rate)["ovrl"] for wav, rate in speech)
    for name, wav in _stationary_sounds().items():
        figures = speech_measures(wav.astype(np.float32), RATE)
        passes_as_speech = (figures.spectral_change_db >= SPECTRAL_CHANGE_TARGET * least_change
                            and low <= figures.voiced_fraction <= high)
        assert not passes_as_speech, (name, figures)
        assert dnsmos(wav.astype(np.float32), RATE)["ovrl"] < speech_mos, name
    assert speech_measures(_stationary_sounds()["tone"], RATE).spectral_flatness < 0.1 * speech_figures[0].spectral_flatness


# -- choosing utterances ------------------------------------------------------------------

def test_select_utterances_is_deterministic_and_prefers_long_enough():
    from audiolm_pl.evaluation.selection import select_utterances
    from audiolm_pl.semantic.corpus import Utterance

    def utterance(speaker, index, seconds):
        return Utterance(f"{speaker}/{index}", np.zeros(int(seconds * RATE), np.float32), RATE, speaker)

    pool = [utterance("a", i, 5.0 if i % 2 else 1.0) for i in range(8)] + [utterance("b", 0, 1.0)]
    chosen = select_utterances(pool, per_speaker=3, min_seconds=4.0, seed=0)
    keys = [u.key for u in chosen]
    assert [u.speaker for u in chosen] == ["a", "a", "a", "b"]
    assert all(int(key.split("/")[1]) % 2 == 1 for key in keys[:3])  # the long ones of a
    assert [u.key for u in select_utterances(pool[::-1], 3, 4.0, seed=0)] == keys  # not shard order
    assert {tuple(u.key for u in select_utterances(pool, 3, 4.0, seed=s)) for s in range(6)} != {tuple(keys)}


# -- the command -------------------------------------------------------------------------

def test_eval_command_end_to_end(tiny_run, tmp_path):
    from audiolm_pl.cli import main

    out = tmp_path / "eval"
    code = main(["eval", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--shards", str(tiny_run.root / "shards" / "speech" / "train"),
                 "--out", str(out), "--per-speaker", "1", "--prompt-seconds", "0.5", "--seconds", "0.5", "--asr", "whisper,sphinx"])
    assert code == 0
    report = json.loads((out / "eval.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in eval.json"))
    assert [u["speaker"] for u in report["utterances"]] == ["spk_a", "spk_b", "spk_c", "spk_d"]
    codec = report["codec"]
    for judge in ("whisper", "sphinx"):
        original, roundtrip = codec["asr"][judge]["original"], codec["asr"][judge]["roundtrip"]
        assert original["utterances"] == 4
        if original["wer"] > 0:
            assert codec["wer_ratio"][judge] == pytest.approx(roundtrip["wer"] / original["wer"])
        assert report["acoustic"]["asr"][judge]["generated"]["utterances"] == 4
    continuation = report["continuation"]
    assert continuation["prompts"] == 4 and continuation["num_speakers"] == 4
    assert continuation["self_enrolled"] == ["spk_a", "spk_b", "spk_c", "spk_d"]
    assert set(continuation["generated"]["dnsmos"]) == {"sig", "bak", "ovrl", "p808"}
    names = [target["name"] for target in report["targets"]]
    assert names[:3] == ["codec round trip STOI", "codec round trip WER (whisper)", "codec round trip WER (sphinx)"]
    assert "continuation speaker-ID accuracy" in names
    for path in continuation["files"]:
        wav, rate = soundfile.read(path)
        assert rate == RATE and abs(len(wav) - RATE) <= 320  # 0.5 s prompt + 0.5 s continuation
        assert (out / "continuations" / path.split("/")[-1]).with_suffix(".png").stat().st_size > 10_000
    markdown = (out / "report.md").read_text()
    assert "| codec round trip STOI |" in markdown and "continuations/000-utt" in markdown
    assert "enrolled on that utterance's own prompt: spk_a, spk_b, spk_c, spk_d" in markdown


def test_eval_command_missing_shards_exits_2(tiny_run, tmp_path, capsys):
    from audiolm_pl.cli import main

    missing = tmp_path / "no_such_shards"
    assert main(["eval", "--pipeline", str(tiny_run.root / "pipeline.yaml"), "--shards", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("audiolm-pl eval: error:") and str(missing) in error


def test_evaluate_pipeline_with_local_transformers_judges(tiny_run, tmp_path):
    """Tiny random x-vector and CTC models saved locally stand in for real ones (no downloads);
    the held-out split has one speaker, so identification is trivial and the report says so."""
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor, WavLMConfig, WavLMForXVector)

    from audiolm_pl.evaluation import EvalConfig, evaluate_pipeline, load_eval_utterances
    from audiolm_pl.inference.audiolm import AudioLM

    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
                 conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE)
    speaker_dir, asr_dir = tmp_path / "xvector", tmp_path / "asr"
    WavLMForXVector(WavLMConfig(**small, tdnn_dim=(16, 16), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1),
                                xvector_output_dim=8)).save_pretrained(speaker_dir)
    extractor.save_pretrained(speaker_dir)
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "|": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}))
    Wav2Vec2ForCTC(Wav2Vec2Config(**small, vocab_size=30)).save_pretrained(asr_dir)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=Wav2Vec2CTCTokenizer(str(vocab), word_delimiter_token="|")).save_pretrained(asr_dir)

    config = EvalConfig(per_speaker=4, prompt_seconds=0.5, seconds=0.5, asr=[f"hf:{asr_dir}"], speaker=f"xvector:{speaker_dir}",
                        dnsmos=False, sections=["codec", "continuation"])
    model = AudioLM.from_config(tiny_run.root / "pipeline.yaml")
    utterances = load_eval_utterances(tiny_run.root / "shards" / "speech" / "val", RATE, config.per_speaker, config.min_utterance_seconds)
    report = evaluate_pipeline(model, utterances, config)
    assert report.judges["speaker"].startswith("x-vector") and report.judges[f"asr hf:{asr_dir}"] == f"hf:{asr_dir}"
    assert report.acoustic is None and report.codec.asr[f"hf:{asr_dir}"]["original"].utterances == 4
    continuation = report.continuation
    assert continuation.prompts == 2 and continuation.num_speakers == 1 and continuation.generated.dnsmos == {}
    assert continuation.files == []  # no out_dir: nothing written
    speaker_target = next(t for t in report.targets if t.name == "continuation speaker-ID accuracy")
    assert speaker_target.figure == 1.0 and "trivial" in speaker_target.note
