"""`audiolm-pl codec roundtrip|encode|decode`: use a trained codec on files.

Codes files are `.safetensors` holding `codes` (T_a, Q) int64 with the TokenSpec in the metadata,
so `decode` can refuse codes from another codec.
"""

from __future__ import annotations

import json
from pathlib import Path


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("codec", help="encode/decode audio with a trained codec")
    commands = parser.add_subparsers(dest="codec_command", metavar="CODEC_COMMAND", required=True)

    roundtrip = commands.add_parser("roundtrip", help="IN.wav -> codes -> OUT.wav (optionally with fewer quantizers)")
    roundtrip.add_argument("checkpoint", help="codec checkpoint or run directory")
    roundtrip.add_argument("in_wav", type=Path)
    roundtrip.add_argument("out_wav", type=Path)
    roundtrip.add_argument("--quantizers", type=int, default=None, help="decode with the first n levels (lower bitrate)")
    roundtrip.set_defaults(func=_roundtrip)

    encode = commands.add_parser("encode", help="IN.wav -> CODES.safetensors")
    encode.add_argument("checkpoint")
    encode.add_argument("in_wav", type=Path)
    encode.add_argument("out_codes", type=Path)
    encode.set_defaults(func=_encode)

    decode = commands.add_parser("decode", help="CODES.safetensors -> OUT.wav")
    decode.add_argument("checkpoint")
    decode.add_argument("codes", type=Path)
    decode.add_argument("out_wav", type=Path)
    decode.add_argument("--quantizers", type=int, default=None)
    decode.set_defaults(func=_decode)


def _load(checkpoint: str):
    from audiolm_pl.codec import load_codec

    return load_codec(checkpoint)


def _read_wav(codec, path: Path):
    import torch

    from audiolm_pl.data.audio import load_mono

    return torch.from_numpy(load_mono(path, codec.sample_rate))[None]  # (1, T)


def _write_wav(codec, wav, path: Path) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, wav[0].clamp(-1, 1).numpy(), codec.sample_rate)


def _levels(codec, quantizers: int | None) -> int:
    if quantizers is None:
        return codec.num_quantizers
    if not 1 <= quantizers <= codec.num_quantizers:
        raise ValueError(f"--quantizers must be between 1 and {codec.num_quantizers} for this codec, got {quantizers}")
    return quantizers


def _roundtrip(args) -> int:
    codec = _load(args.checkpoint)
    wav = _read_wav(codec, args.in_wav)
    levels = _levels(codec, args.quantizers)
    out = codec.decode(codec.encode(wav)[:, :, :levels])[:, : wav.shape[1]]  # (1, T)
    _write_wav(codec, out, args.out_wav)
    kbps = levels * codec.frame_rate * (codec.codebook_size - 1).bit_length() / 1000
    print(f"wrote {args.out_wav} ({levels} of {codec.num_quantizers} quantizers, {kbps:g} kbps)")
    return 0


def _encode(args) -> int:
    from safetensors.torch import save_file

    codec = _load(args.checkpoint)
    codes = codec.encode(_read_wav(codec, args.in_wav))[0]  # (T_a, Q)
    args.out_codes.parent.mkdir(parents=True, exist_ok=True)
    save_file({"codes": codes.contiguous()}, str(args.out_codes), metadata={"token_spec": json.dumps(codec.token_spec.to_dict())})
    print(f"wrote {args.out_codes}: {tuple(codes.shape)} codes ({codec.token_spec.describe()})")
    return 0


def _decode(args) -> int:
    from safetensors import safe_open

    from audiolm_pl.tokens import TokenSpec, require_same_spec

    codec = _load(args.checkpoint)
    with safe_open(str(args.codes), "pt") as handle:
        metadata = handle.metadata() or {}
        codes = handle.get_tensor("codes")  # (T_a, Q)
    if "token_spec" not in metadata:
        raise ValueError(f"{args.codes} has no token_spec metadata; expected a file written by 'audiolm-pl codec encode'")
    require_same_spec(codec.token_spec, TokenSpec.from_dict(json.loads(metadata["token_spec"])),
                      consumer=f"codec ({args.checkpoint})", producer=f"codes file {args.codes}")
    levels = _levels(codec, args.quantizers)
    _write_wav(codec, codec.decode(codes[None, :, :levels]), args.out_wav)
    print(f"wrote {args.out_wav}")
    return 0
