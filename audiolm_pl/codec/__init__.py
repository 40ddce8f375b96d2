"""The codec stage: acoustic tokens at 50 Hz. Two classes behind one `AcousticCodec` contract, chosen
by `model.kind` in the config (`registry.CODECS`): SoundStream (the paper's, time-domain, GAN) and a
frame-domain codec (ConvNeXt at the frame rate + inverse STFT + residual FSQ) that learns on a CPU. Both are
`QuantizedCodec`s (base.py): encoder -> quantizer -> decoder, the contract's plumbing written once. Pretrained
transformers codecs (EnCodec, DAC, Mimi, X-Codec) plug in wherever a codec is named as `hf:DIR` (hf.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from audiolm_pl.codec.base import CodecOutput, QuantizedCodec
from audiolm_pl.codec.frame_model import FrameCodec, FrameCodecConfig
from audiolm_pl.codec.fsq import FSQConfig
from audiolm_pl.codec.hf import is_hf_codec
from audiolm_pl.codec.model import SoundStream, SoundStreamConfig
from audiolm_pl.codec.quantizer import QuantizerConfig
from audiolm_pl.tokens import AcousticCodec

__all__ = ["CodecOutput", "FSQConfig", "FrameCodec", "FrameCodecConfig", "QuantizedCodec", "QuantizerConfig", "SoundStream",
           "SoundStreamConfig", "codec_hash", "is_hf_codec", "load_codec"]


def codec_hash(name: str | Path) -> str:
    """The `codec_hash` token shards record: the checkpoint file's sha256, or for `hf:DIR` that of the
    folder's config.json and safetensors weights, or for a `save_pretrained` folder that of its
    `audiolm_pl.json` and weights."""
    from audiolm_pl.pretrained import folder_hash as export_hash
    from audiolm_pl.pretrained import is_pretrained_folder

    if is_hf_codec(name):
        from audiolm_pl.codec.hf import folder_hash, parse_hf_codec

        return folder_hash(parse_hf_codec(name).path)
    if is_pretrained_folder(name):
        return export_hash(name)
    from audiolm_pl.checkpoint import file_hash

    return file_hash(name)


def load_codec(path: str | Path, device: str | torch.device = "cpu") -> AcousticCodec:
    """A codec checkpoint (or run directory) -> its codec class in eval mode, with the EMA generator
    weights when the checkpoint has them. Weights-only loading: no code runs from the file.
    `hf:DIR[?options]` names a pretrained transformers codec folder instead (codec/hf.py)."""
    if is_hf_codec(path):
        from audiolm_pl.codec.hf import load_hf_codec

        return load_hf_codec(path, device)
    from audiolm_pl.checkpoint import CheckpointError, load_stage_checkpoint, sub_state_dict
    from audiolm_pl.codec.lightning import CodecRunConfig, build_codec
    from audiolm_pl.config import from_dict
    from audiolm_pl.tokens import require_same_spec

    checkpoint = load_stage_checkpoint(path, expected_stage="codec")
    run_config = from_dict(CodecRunConfig, checkpoint.config)
    codec = build_codec(run_config.model)
    weights = sub_state_dict(checkpoint.state_dict, "ema_model.module") or sub_state_dict(checkpoint.state_dict, "model")
    missing, unexpected = codec.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint.path}: codec weights do not fit its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    stored = checkpoint.token_specs.get("acoustic")
    if stored is not None:
        require_same_spec(stored, codec.token_spec, consumer=f"codec checkpoint {checkpoint.path}", producer="its rebuilt model")
    return codec.eval().to(device)
