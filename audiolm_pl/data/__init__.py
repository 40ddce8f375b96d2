"""Audio on disk: reading and validating files, WebDataset shards, the embedded corpus, DataModules."""
