"""Settings of the LLM judge that locates the first wrong step (Qwen "Lessons",
arXiv 2501.07301 §4.2; ProcessBench, arXiv 2412.06559).

The judge reads the problem and the solution's steps, wrapped in ``<paragraph_i>`` tags and indexed from 0
as in ProcessBench's critique template, reviews them in order, stops at the first error (the Qwen
"Lessons" judge prompt of App. C: "once a paragraph is found to contain any error, stop further
analysis") and puts the index of the earliest wrong paragraph, or -1 when every paragraph is right, in
``\\boxed{}``.

    e_judge = plurality vote over ``samples`` parsed indices   (ProcessBench: 8 samples for open models,
                                                               greedy decoding for GPT-4o)

Defaults: one greedy sample (``temperature`` 0.0); with ``samples > 1`` the temperature defaults to 0.7 so
the votes differ. The Qwen paper's judge is Qwen2.5-72B-Instruct; any engine of this project works.

The template is sent as raw text (the engines continue a text prefix, no chat template is applied): put
the model's chat markup into ``template`` yourself when the judge is an instruct model. Placeholders
``{problem}`` and ``{tagged_steps}`` are substituted in one pass with plain string replacement (no
``str.format``), so braces elsewhere in the template, the problem or the steps are left alone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from steplabel.storage.strict import StrictConfig

DEFAULT_JUDGE_TEMPLATE = (
    "Below is a math problem and a proposed solution. The solution is split into paragraphs; each paragraph "
    "is enclosed in <paragraph_i> tags, where i is its index, counting from 0.\n"
    "\n"
    "[Problem]\n"
    "\n"
    "{problem}\n"
    "\n"
    "[Solution]\n"
    "\n"
    "{tagged_steps}\n"
    "\n"
    "Review the solution paragraph by paragraph, in order. For each paragraph, check its reasoning and its "
    "calculations. As soon as a paragraph contains an error, stop: do not review the paragraphs after it. "
    "Your final answer is the index of the earliest paragraph that contains an error, or -1 if every "
    "paragraph is correct.\n"
    "\n"
    "Put your final answer (the index only) in \\boxed{}.\n"
    "\n"
    "Review:\n"
)

GREEDY_TEMPERATURE = 0.0
VOTING_TEMPERATURE = 0.7


class JudgeConfig(StrictConfig):
    name: Literal["judge"] = "judge"
    samples: int = Field(1, ge=1, description="judgements per solution, plurality vote (ProcessBench open models: 8)")
    temperature: float = Field(
        GREEDY_TEMPERATURE,
        ge=0,
        description="unset: 0.0 when samples == 1, else 0.7 (greedy samples would all vote alike)",
    )
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, description="room for the critique and the boxed index")
    template: str = Field(DEFAULT_JUDGE_TEMPLATE, description="raw prompt text with {problem} and {tagged_steps}")
    stop: list[str] = Field(default_factory=list, description="stop strings; none by default (critiques span paragraphs)")
    max_rationale_chars: int = Field(4000, ge=0, description="the kept critique text is cut to this many characters")

    @model_validator(mode="before")
    @classmethod
    def _default_temperature(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("temperature") is None:
            try:
                voting = int(data.get("samples", 1)) > 1
            except (TypeError, ValueError):
                voting = False  # the field validator reports the bad value
            data = {**data, "temperature": VOTING_TEMPERATURE if voting else GREEDY_TEMPERATURE}
        return data

    @field_validator("template")
    @classmethod
    def _placeholders(cls, template: str) -> str:
        missing = [p for p in ("{problem}", "{tagged_steps}") if p not in template]
        if missing:
            raise ValueError(f"judge template lacks the placeholder(s) {', '.join(missing)}")
        return template
