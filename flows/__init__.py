"""Prefect orchestration: thin flows and tasks around plain functions (no algorithms here)."""
