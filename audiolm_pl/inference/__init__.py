"""Inference: the `AudioLM` composite that chains the four stages, and `audiolm-pl generate`."""

from audiolm_pl.inference.audiolm import AudioLM, PipelineConfig, PipelineSampling

__all__ = ["AudioLM", "PipelineConfig", "PipelineSampling"]
