"""`stage.save_pretrained(folder)` / `Class.from_pretrained(folder)` as methods, for every stage class that
`audiolm_pl.pretrained` writes (codecs, the semantic tokenizer, `SSLModel`, `LoadedLM`, `LoadedSoundStorm`). The
folder format and its checks live in `pretrained.py`; this mixin only gives them the method spelling transformers
users expect."""

from __future__ import annotations

from pathlib import Path


class Shareable:
    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """This stage -> a folder of safetensors + JSON (written whole or not at all); returns the folder."""
        from audiolm_pl.pretrained import save_pretrained

        return save_pretrained(self, folder, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str = "cpu"):
        """A `save_pretrained` folder -> the stage, in eval mode, checked as its checkpoint loader checks it.
        Refuses a folder that holds another kind of stage (e.g. an LM folder given to a codec class)."""
        from audiolm_pl.pretrained import from_pretrained

        stage = from_pretrained(folder, device=device)
        if not isinstance(stage, cls):
            raise TypeError(f"{folder} holds a {type(stage).__name__}, not a {cls.__name__}")
        return stage
