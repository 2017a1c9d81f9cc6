"""Versioned, content-addressed Parquet shard store for step labels and rejects."""
