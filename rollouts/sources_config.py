"""Configs of the three problem sources (:mod:`steplabel.rollouts.sources` reads them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from steplabel.storage.strict import StrictConfig

AnswerStyle = Literal["auto", "gsm8k", "boxed", "plain"]


class BuiltinSource(StrictConfig):
    """Generated multi-step arithmetic word problems with exact answers (the offline default)."""

    kind: Literal["builtin"] = "builtin"
    num_problems: int = Field(8, ge=1, le=100_000)
    seed: int = 0


class FileSource(StrictConfig):
    """A local JSONL or Parquet file. GSM8K (`####`) and MATH (`answer` / `\\boxed{}`) work as they are."""

    kind: Literal["file"] = "file"
    path: str
    question_field: str = "question"
    answer_field: str = "answer"
    answer_style: AnswerStyle = "auto"
    limit: int | None = Field(None, ge=1)


class HubSource(StrictConfig):
    """A Hugging Face dataset by name (needs network and the `datasets` package)."""

    kind: Literal["hf"] = "hf"
    dataset: str
    subset: str | None = None
    split: str = "train"
    question_field: str = "question"
    answer_field: str = "answer"
    answer_style: AnswerStyle = "auto"
    limit: int | None = Field(None, ge=1)


SourceConfig = Annotated[BuiltinSource | FileSource | HubSource, Field(discriminator="kind")]
