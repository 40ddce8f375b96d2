"""The generated-audio detector (the paper's safety classifier, section VI): a small CNN on log-mel frames
that tells real audio from our codec's resynthesis and our generations; see docs/detector.md.

    audiolm-pl detector-shards OUT --codec runs/codec --real shards/speech/train   # synthetic shards
    audiolm-pl train detector --config tiny                                        # the `detector` stage
    audiolm-pl detect runs/detector FILE...                                        # P(synthetic) per file
"""

from audiolm_pl.detector.model import DetectorConfig, MelCNNDetector

__all__ = ["DetectorConfig", "MelCNNDetector"]
