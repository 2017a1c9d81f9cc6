"""TRL's own PRM tokenization of a `steplabel export --format trl` file, run in an interpreter that has
trl 0.29 (PRMTrainer was removed in trl 1.x). Usage: python trl_tokenize_check.py FILE.parquet

Every step's label must land on that step's separator token, and the tokens between two labelled
positions must be that step. Prints ``tokenize_row checked N rows``; a failed check raises.
"""

from __future__ import annotations

import os
import re
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import datasets  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from trl.experimental.prm import PRMTrainer  # noqa: E402


def tiny_tokenizer(texts: list[str]):
    """A word-level tokenizer over exactly these texts, with "\\n" as a token of its own."""
    pattern = r"\n|[^\S\n]+|\w+|[^\w\s]"
    vocab = {"[UNK]": 0, "[BOS]": 1}
    for t in texts:
        for piece in re.findall(pattern, t):
            vocab.setdefault(piece, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]"), vocab


def main(path: str) -> None:
    ds = datasets.load_dataset("parquet", data_files=path, split="train")
    texts = [r["prompt"] for r in ds] + [s for r in ds for s in r["completions"]] + ["\n"]
    tokenizer, vocab = tiny_tokenizer(texts)
    sep_id = vocab["\n"]
    for row in ds:
        out = PRMTrainer.tokenize_row(
            row, tokenizer, "\n", max_length=None, max_completion_length=None, train_on_last_step_only=False, is_eval=False
        )
        assert len(out["input_ids"]) == len(out["labels"])
        positions = [i for i, lab in enumerate(out["labels"]) if lab != -100]
        assert len(positions) == len(row["completions"])  # one label per step
        assert [out["labels"][i] for i in positions] == [int(b) for b in row["labels"]]
        assert all(out["input_ids"][i] == sep_id for i in positions)  # on each step's separator token
        assert out["input_ids"][0] == tokenizer.bos_token_id
        # the tokens of step k lie between the (k-1)-th and k-th labelled positions
        starts = [len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]) + 1] + [p + 1 for p in positions[:-1]]
        for step, s, e in zip(row["completions"], starts, positions, strict=True):
            assert tokenizer.decode(out["input_ids"][s:e]).replace(" ", "") == step.replace(" ", ""), (step, s, e)
    print(f"tokenize_row checked {len(ds)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
