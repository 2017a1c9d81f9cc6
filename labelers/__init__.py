"""Labelling algorithms as pure, resumable state machines (no Prefect, no storage, no engine code)."""
