"""The embedded default corpus: synthetic voices (speech), real voices from Debian packages (real), piano (piano).

Each builder writes `<out>/{train,val}/*.wav` (+ `.txt`, `.json`) and a report; `audiolm-pl data shards` packs them.
"""
