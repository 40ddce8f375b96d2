"""Audio on disk: reading and validating files, WebDataset shards, training streams, DataModules."""
