"""The labelling library: turns a shard of problems into step-label and reject rows (used by flows and CLI)."""
