"""Our own self-supervised speech model: a `transformers` HuBERT / wav2vec 2.0 encoder built from
config (random init, no download) plus a linear head that predicts k-means target ids per frame.

The model knows nothing of training: masking positions come in as an argument
(`mask_time_indices`), losses live in `ssl_lightning.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from audiolm_pl.shareable import Shareable


@dataclass
class SSLModelConfig:
    arch: str = "hubert"  # "hubert" | "wav2vec2" (same encoder layout, different HF class)
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 128
    conv_dim: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    conv_kernel: list[int] = field(default_factory=lambda: [10, 8, 4, 4])
    conv_stride: list[int] = field(default_factory=lambda: [5, 4, 4, 4])  # product 320 -> 50 Hz at 16 kHz
    num_conv_pos_embeddings: int = 32
    num_conv_pos_embedding_groups: int = 4
    dropout: float = 0.1
    num_targets: int = 0  # k-means ids predicted; 0 = take the target tokenizer's vocab_size at build time
    sample_rate: int = 16000
    activation_checkpointing: bool = False  # recompute each conv / transformer layer in backward (training only)


@dataclass
class SSLOutput:
    logits: torch.Tensor  # (B, T_f, num_targets) target-id scores per frame
    frame_mask: torch.Tensor  # (B, T_f) bool, True on frames of real audio
    hidden_states: tuple  # num_hidden_layers + 1 tensors (B, T_f, hidden_size)


def hf_config(config: SSLModelConfig):
    from transformers import HubertConfig, Wav2Vec2Config

    classes = {"hubert": HubertConfig, "wav2vec2": Wav2Vec2Config}
    if config.arch not in classes:
        raise ValueError(f"model.arch must be one of {sorted(classes)}, got {config.arch!r}")
    if not len(config.conv_dim) == len(config.conv_kernel) == len(config.conv_stride):
        raise ValueError(
            f"model.conv_dim/conv_kernel/conv_stride must have equal lengths, got "
            f"{len(config.conv_dim)}/{len(config.conv_kernel)}/{len(config.conv_stride)}"
        )
    return classes[config.arch](
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        conv_dim=list(config.conv_dim),
        conv_kernel=list(config.conv_kernel),
        conv_stride=list(config.conv_stride),
        num_feat_extract_layers=len(config.conv_dim),
        num_conv_pos_embeddings=config.num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=config.num_conv_pos_embedding_groups,
        hidden_dropout=config.dropout,
        attention_dropout=config.dropout,
        activation_dropout=0.0,
        feat_proj_dropout=config.dropout,
        layerdrop=0.0,
        # pre-LN transformer and layer-normed conv front end: stable from scratch, honours padding masks
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
        apply_spec_augment=True,  # the masked_spec_embed replaces the frames we mask (mask_time_indices)
        mask_time_prob=0.05,  # > 0 only so that HF creates masked_spec_embed; we always pass our own masks
        mask_feature_prob=0.0,
    )


class SSLModel(Shareable, nn.Module):
    def __init__(self, config: SSLModelConfig):
        super().__init__()
        from transformers import HubertModel, Wav2Vec2Model

        if config.num_targets <= 0:
            raise ValueError("SSLModelConfig.num_targets must be resolved to the target vocabulary (> 0) before building")
        self.config = config
        encoder_class = HubertModel if config.arch == "hubert" else Wav2Vec2Model
        self.encoder = encoder_class(hf_config(config))
        self.head = nn.Linear(config.hidden_size, config.num_targets)
        if config.activation_checkpointing:
            # non-reentrant torch.utils.checkpoint around each layer's `forward` (not `__call__`): FSDP2's
            # all-gather hooks stay outside the checkpoint, so the recompute in backward gathers the weights again
            self.encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def shard_units(self) -> list[nn.Module]:
        """The sub-modules FSDP2 shards one by one before the whole model (`SSLLightning.configure_model`): the
        conv feature encoder (it runs once, first) and every transformer layer; the rest (feature projection,
        positional conv, masked-frame embedding, head) stays with the root."""
        return [self.encoder.feature_extractor, *self.encoder.encoder.layers]

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / math.prod(self.config.conv_stride)

    def num_frames(self, num_samples: torch.Tensor | int) -> torch.Tensor:
        return self.encoder._get_feat_extract_output_lengths(torch.as_tensor(num_samples))

    def frame_mask(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """padding_mask (B, T) bool -> (B, T_f) bool, True on frames computed from real audio."""
        num_frames = int(self.num_frames(padding_mask.shape[1]))
        lengths = self.num_frames(padding_mask.sum(1))  # (B,)
        return torch.arange(num_frames, device=padding_mask.device)[None, :] < lengths[:, None]  # (B, T_f)

    def forward(
        self,
        wav: torch.Tensor,
        padding_mask: Optional[torch.Tensor] = None,
        mask_time_indices: Optional[torch.Tensor] = None,
    ) -> SSLOutput:
        """wav (B, T) float; padding_mask (B, T) bool True on audio; mask_time_indices (B, T_f) bool."""
        if padding_mask is None:
            padding_mask = torch.ones_like(wav, dtype=torch.bool)
        real = padding_mask.float()
        count = real.sum(1, keepdim=True).clamp_min(1)
        mean = (wav * real).sum(1, keepdim=True) / count
        std = (((wav - mean) * real).pow(2).sum(1, keepdim=True) / count).sqrt()
        wav = (wav - mean) / (std + 1e-5) * real  # per-utterance normalisation over real samples
        output = self.encoder(
            wav,
            attention_mask=padding_mask.long(),
            mask_time_indices=mask_time_indices,
            output_hidden_states=True,
        )
        logits = self.head(output.last_hidden_state)  # (B, T_f, num_targets)
        return SSLOutput(logits, self.frame_mask(padding_mask), output.hidden_states)

    def hidden_states(self, wav: torch.Tensor) -> tuple:
        """wav (B, T) -> hidden_states[0..num_hidden_layers], each (B, T_f, hidden_size)."""
        return self.forward(wav).hidden_states


def load_ssl_model(path: str | Path) -> SSLModel:
    """An `audiolm-pl train ssl` checkpoint (or run directory) -> `SSLModel` with its weights (weights-only load)."""
    from audiolm_pl.checkpoint import load_stage_checkpoint, sub_state_dict
    from audiolm_pl.config import from_dict

    checkpoint = load_stage_checkpoint(path, expected_stage="ssl")
    model = SSLModel(from_dict(SSLModelConfig, checkpoint.config["model"]))
    model.load_state_dict(sub_state_dict(checkpoint.state_dict, "model"))
    return model
