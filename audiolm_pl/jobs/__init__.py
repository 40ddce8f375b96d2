"""Jobs that drive the stages: tokenizing shards, the main job and its report; `cli.py` holds their commands
(train, tokenize, main)."""
