#!/usr/bin/env python
"""Print PNMI, phone/cluster purity and cross-speaker agreement of any semantic tokenizer(s).

    python scripts/measure_semantic.py runs/semantic/mfcc_v0.safetensors runs/semantic/ssl_v1.safetensors \
        --shards shards/speech/val [--limit 200] [--json out.json]

Same as `audiolm-pl semantic measure`; the shards' json must carry "phones" alignments.
"""

import sys

from audiolm_pl.cli import main

if __name__ == "__main__":
    sys.exit(main(["semantic", "measure", *sys.argv[1:]]))
