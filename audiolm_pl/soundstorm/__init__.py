"""SoundStorm-style parallel acoustic stage: one bidirectional model in place of the coarse and fine LMs
(docs/soundstorm.md)."""

from audiolm_pl.soundstorm.decoding import SoundStormSampling, generate_soundstorm
from audiolm_pl.soundstorm.stage import LoadedSoundStorm, SoundStormRunConfig, load_soundstorm

__all__ = ["LoadedSoundStorm", "SoundStormRunConfig", "SoundStormSampling", "generate_soundstorm", "load_soundstorm"]
