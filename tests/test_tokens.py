"""The token contract: TokenSpec validation, description and mismatch messages."""

import pytest

from audiolm_pl.tokens import TokenSpec, TokenSpecMismatch, require_same_spec


def codec_spec(**changes):
    values = dict(kind="acoustic", sample_rate=16000, frame_rate=50.0, vocab_size=1024, num_quantizers=12)
    values.update(changes)
    return TokenSpec(**values)


def test_spec_round_trips_and_describes_itself():
    spec = codec_spec()
    assert TokenSpec.from_dict(spec.to_dict()) == spec
    assert spec.samples_per_frame == 320
    assert spec.describe() == "12 x 1024 codes at 50 Hz over 16000 Hz audio"


@pytest.mark.parametrize("field,value", [("kind", "visual"), ("sample_rate", 0), ("frame_rate", -1.0), ("vocab_size", 0)])
def test_invalid_specs_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        codec_spec(**{field: value})


def test_unknown_keys_in_stored_specs_are_refused():
    with pytest.raises(ValueError, match="unknown TokenSpec keys \\['codebooks'\\]"):
        TokenSpec.from_dict({**codec_spec().to_dict(), "codebooks": 3})


def test_mismatch_names_both_sides_and_the_differences():
    with pytest.raises(TokenSpecMismatch) as err:
        require_same_spec(codec_spec(), codec_spec(vocab_size=512, num_quantizers=8),
                          consumer="coarse LM (runs/coarse)", producer="codec (runs/codec2)")
    message = str(err.value)
    assert message.startswith("coarse LM (runs/coarse) was trained on acoustic tokens of 12 x 1024 codes")
    assert "codec (runs/codec2) gives 8 x 512 codes" in message
    assert "vocab_size 1024 vs 512" in message and "num_quantizers 12 vs 8" in message


def test_identical_specs_pass():
    require_same_spec(codec_spec(), codec_spec(), consumer="a", producer="b")


def test_frame_arithmetic_of_a_spec():
    acoustic, semantic = codec_spec(), TokenSpec("semantic", 16000, 25.0, 500)
    assert acoustic.num_frames(16000 + 319) == 50 and acoustic.num_frames(16000 + 320) == 51  # whole frames only
    assert acoustic.samples_for(51) == 51 * 320
    assert acoustic.frames_in(0.999) == 49 and acoustic.frames_covering(0.981) == 50
    assert acoustic.frame_ratio(semantic) == 2.0 and acoustic.whole_frame_ratio(semantic) == 2
    assert acoustic.frames_for(7, semantic) == 14 and semantic.frames_for(15, acoustic) == 8  # 7.5 rounds to even
    assert semantic.frames_for(15, acoustic, whole=True) == 7  # semantic frames that 15 acoustic ones cover


def test_a_fractional_frame_ratio_is_refused_naming_both_rates():
    with pytest.raises(ValueError, match="acoustic frame rate 75 Hz is not a whole multiple of the semantic frame rate 50 Hz"):
        codec_spec(frame_rate=75.0).whole_frame_ratio(TokenSpec("semantic", 16000, 50.0, 500))
