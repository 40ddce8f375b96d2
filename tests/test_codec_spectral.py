"""`codec.spectral.stft_magnitude`: the mel loss's and the frame codec's STFT magnitudes with a hand-written
backward must equal torch.stft's values and gradients, or the codec trains on a different loss."""

from __future__ import annotations

import pytest
import torch

from audiolm_pl.codec.spectral import stft_magnitude


@pytest.mark.parametrize("size,hop,samples", [(256, 64, 16000), (2048, 512, 16000), (640, 160, 16100), (512, 128, 300)])
def test_values_and_gradients_equal_torch_stft(size, hop, samples):
    torch.manual_seed(size)
    wav = torch.randn(3, samples, dtype=torch.float64)
    window = torch.hann_window(size, dtype=torch.float64)
    ours, reference = wav.clone().requires_grad_(), wav.clone().requires_grad_()
    magnitude = stft_magnitude(ours, window, hop)
    expected = torch.stft(reference, size, hop, window=window, return_complex=True).abs()
    torch.testing.assert_close(magnitude, expected)
    weights = torch.randn_like(expected)  # a loss that weights every bin differently
    (magnitude * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, reference.grad)


def test_a_hop_that_does_not_divide_the_window_falls_back_to_torch_stft():
    wav = torch.randn(2, 4000, requires_grad=True)
    window = torch.hann_window(300)
    magnitude = stft_magnitude(wav, window, 128)
    torch.testing.assert_close(magnitude, torch.stft(wav, 300, 128, window=window, return_complex=True).abs())
    magnitude.sum().backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all()
