"""`audiolm-pl semantic import-centroids`: k-means centroids fitted elsewhere (a HuBERT layer's k-means, as in
HubertWithKmeans) become our tokenizer file, and its ids are exactly the nearest centroid of each frame of
hidden_states[layer], computed here by hand on a tiny random HuBERT saved with save_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import synthetic_voice

LAYER = 1


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    """(folder, model): a 2-layer random HuBERT at 50 Hz (hop 320) saved with save_pretrained, and the model."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, conv_dim=(16, 16, 16, 16),
                          conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4))
    folder = tmp_path_factory.mktemp("hubert")
    model = HubertModel(config).eval()
    model.save_pretrained(folder)
    return folder, model


def speech(batch: int = 2, seconds: float = 1.3) -> torch.Tensor:
    return torch.stack([torch.from_numpy(synthetic_voice(110.0 + 70 * row, seconds, 16000, seed=row)) for row in range(batch)])


@pytest.fixture(scope="module")
def centroids(hubert):
    """12 centroids (12, 32) near frames of the layer, so the ids spread over many of them."""
    _, model = hubert
    with torch.no_grad():
        frames = model(speech(1, 2.0), output_hidden_states=True).hidden_states[LAYER][0]  # (T_f, 32)
    generator = torch.Generator().manual_seed(0)
    picked = frames[torch.randperm(len(frames), generator=generator)[:12]]
    return (picked + 0.01 * torch.randn(picked.shape, generator=generator)).numpy()


def by_hand(model, wav: torch.Tensor, centres: np.ndarray, pool: int = 1) -> torch.Tensor:
    """The nearest centroid of each frame of hidden_states[LAYER] (pairs averaged first when pool = 2)."""
    with torch.no_grad():
        hidden = model(wav, output_hidden_states=True).hidden_states[LAYER]  # (B, T_f, D)
    if pool > 1:
        hidden = F.avg_pool1d(hidden.transpose(1, 2), pool, pool, ceil_mode=True).transpose(1, 2)  # (B, T_f / pool, D)
    return torch.cdist(hidden, torch.from_numpy(centres)).argmin(-1)  # (B, T)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_imported_ids_are_the_nearest_centroids_of_the_layer(suffix, hubert, centroids, tmp_path):
    from audiolm_pl.cli import main
    from audiolm_pl.semantic import load_tokenizer

    folder, model = hubert
    path = tmp_path / f"km{suffix}"
    np.save(path, centroids) if suffix == ".npy" else np.savez(path, cluster_centers_=centroids)
    out = tmp_path / "imported.safetensors"
    assert main(["semantic", "import-centroids", str(path), str(out), "--source", f"hf:{folder}", "--layer", str(LAYER)]) == 0
    tokenizer = load_tokenizer(out)
    assert tokenizer.token_spec.to_dict() == {"kind": "semantic", "sample_rate": 16000, "frame_rate": 50.0,
                                              "vocab_size": 12, "num_quantizers": 1}
    wav = speech()  # (2, 20800): 65 frames by the contract; HuBERT's convolutions give 64
    ids = tokenizer.encode(wav)
    expected = by_hand(model, wav, centroids)
    assert ids.shape == (2, 65) and expected.shape == (2, 64)
    assert torch.equal(ids[:, :64], expected)
    assert torch.equal(ids[:, 64], expected[:, -1])  # the contract's frame count: the last frame repeated
    assert len(expected.unique()) >= 4  # the comparison covers many centroids, not one


def test_a_lower_token_rate_assigns_averaged_frames(hubert, centroids, tmp_path):
    from audiolm_pl.semantic.cli import import_centroids, parse_source

    folder, model = hubert
    np.save(tmp_path / "km.npy", centroids)
    tokenizer = import_centroids(tmp_path / "km.npy", parse_source(f"hf:{folder}", LAYER, 16000), tmp_path / "t.safetensors",
                                 frame_rate=25.0)
    wav = speech()
    assert tokenizer.frame_rate == 25.0 and torch.equal(tokenizer.encode(wav)[:, :32], by_hand(model, wav, centroids, pool=2))


def test_pickles_and_misfit_centroids_are_refused(hubert, centroids, tmp_path):
    from audiolm_pl.semantic.cli import import_centroids, parse_source

    folder, _ = hubert
    source = parse_source(f"hf:{folder}", LAYER, 16000)
    np.save(tmp_path / "narrow.npy", centroids[:, :16])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "two.npz", a=centroids, b=centroids)
    (tmp_path / "km.bin").write_bytes(b"not read")
    for name, message in [
        ("km.bin", r"pickled k-means file \(.bin\) would run code when read.*cluster_centers_"),
        ("narrow.npy", "centroids have dimension 16; the features of hf:.* layer 1 have 32"),
        ("objects.npy", "not a plain numeric array"),
        ("two.npz", r"holds arrays \['a', 'b'\]"),
        ("missing.npy", "does not exist"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            import_centroids(tmp_path / name, source, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
