"""PNMI / purity / cross-speaker agreement, and the `semantic kmeans | encode | measure` commands."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import soundfile
import torch

from audiolm_pl.semantic.cli import add_commands
from audiolm_pl.semantic.corpus import Utterance
from audiolm_pl.semantic.metrics import edit_distance, frame_phone_labels, measure, scores_from_counts


def test_scores_on_known_tables():
    perfect = torch.tensor([[5.0, 0, 0], [0, 3, 0], [0, 0, 2]])  # ids identify phones exactly
    assert scores_from_counts(perfect) == pytest.approx((1.0, 1.0, 1.0))
    independent = torch.tensor([[2.0, 2.0], [2.0, 2.0]])  # ids say nothing about phones
    pnmi, phone_purity, cluster_purity = scores_from_counts(independent)
    assert pnmi == pytest.approx(0.0, abs=1e-12) and phone_purity == pytest.approx(0.5) and cluster_purity == pytest.approx(0.5)
    # one id per phone but the phone split over two ids: PNMI 1, phone purity 1, cluster purity 0.5 + 0.5 * ...
    split = torch.tensor([[1.0, 1.0, 0], [0, 0, 2.0]])
    pnmi, phone_purity, cluster_purity = scores_from_counts(split)
    assert pnmi == pytest.approx(1.0) and phone_purity == pytest.approx(1.0) and cluster_purity == pytest.approx(0.75)


def test_frame_labels_and_edit_distance():
    labels = frame_phone_labels([[0.0, 0.08, "a"], [0.08, 0.2, "b"]], 6, 25.0)  # frame centres 0.02, 0.06, ...
    assert labels == ["a", "a", "b", "b", "b", None]
    assert edit_distance([1, 2, 3], [1, 3]) == 1 and edit_distance([], [4, 4]) == 2


class OracleTokenizer:
    """Ids = a phone's index read from the wav's constant value; perfect phonetic tokens for testing."""

    sample_rate, frame_rate, vocab_size = 16000, 25.0, 4

    def encode(self, wav):
        frames = wav[:, ::640][:, : wav.shape[1] // 640]  # (B, T_s) first sample of each frame
        return frames.round().long().clamp(0, 3)


def test_measure_perfect_tokens_and_cross_speaker():
    phones = [[0.0, 0.4, "p0"], [0.4, 0.8, "p1"], [0.8, 1.2, "p2"]]
    wav = np.repeat(np.array([0, 1, 2], dtype=np.float32), 6400)  # each phone's frames hold its index
    utterances = [Utterance(f"u{s}", wav, 16000, speaker=s, text="same words", phones=phones) for s in ("a", "b")]
    quality = measure(OracleTokenizer(), utterances)
    assert quality.pnmi == pytest.approx(1.0) and quality.phone_purity == pytest.approx(1.0)
    assert quality.frames == 60 and quality.num_phones == 3 and quality.used_ids == 3
    assert quality.speaker_pairs == 1 and quality.cross_speaker_agreement == 1.0 and quality.cross_speaker_unit_edit == 0.0


def run(argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_commands_kmeans_encode_measure(tmp_path, capsys, phone_shards):
    shards = phone_shards.train
    out = tmp_path / "mfcc.safetensors"
    assert run(["semantic", "kmeans", "--source", "mfcc", "--shards", str(shards), "--clusters", "16",
                "--epochs", "2", "--batch-size", "200", "--device", "cpu", "--out", str(out)]) == 0
    assert "16 ids at 25 Hz" in capsys.readouterr().out
    wav_path = tmp_path / "x.wav"
    soundfile.write(wav_path, np.random.default_rng(0).standard_normal(44100).astype("float32") * 0.1, 44100)  # 1 s at 44.1 kHz
    run(["semantic", "encode", str(out), str(wav_path)])
    ids = capsys.readouterr().out.split()
    assert len(ids) == 25 and all(0 <= int(i) < 16 for i in ids)
    assert run(["semantic", "measure", str(out), "--shards", str(shards), "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "PNMI" in printed and "cross-speaker: 9 same-text pairs" in printed  # 3 texts x 3 speaker pairs
    pnmi = float(printed.split("PNMI ")[1].split()[0])
    assert 0.0 < pnmi < 1.0 and not math.isnan(pnmi)


def test_kmeans_through_main_entry_point_on_written_shards(audio_shards, tmp_path):
    from audiolm_pl.cli import main
    from audiolm_pl.semantic import load_tokenizer

    out = tmp_path / "tok.safetensors"
    argv = ["semantic", "kmeans", "--source", "logmel", "--shards", str(audio_shards.train), "--clusters", "8",
            "--epochs", "2", "--batch-size", "256", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    tokenizer = load_tokenizer(out)
    assert tokenizer.token_spec.describe() == "8 ids at 25 Hz over 16000 Hz audio"
    assert main(["semantic", "kmeans", "--source", "hf:/nonexistent/model", "--shards", str(audio_shards.train), "--out", str(out)]) == 2
