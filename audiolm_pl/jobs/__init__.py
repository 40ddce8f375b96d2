"""Jobs that drive the stages: tokenizing shards, the main job and its report."""
