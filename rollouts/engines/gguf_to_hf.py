"""Turn a GGUF checkpoint into a Hugging Face (safetensors) model folder that vLLM can load.

vLLM's GGUF loader is experimental and needs the original HF config; the CPU backend runs plain HF folders
best. transformers can read (and dequantize) GGUF files, so we load the GGUF with transformers, copy its
weights into a freshly built model of the same config, and save that as safetensors with the tokenizer.

transformers (and torch, gguf) are imported lazily: they come with vLLM's environment.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_MARKER = "steplabel_gguf_source.json"


def convert_gguf_to_hf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str = "float32",
                       add_bos_token: bool | None = None, overwrite: bool = False) -> Path:
    """Write an HF model folder for ``gguf_path`` into ``out_dir`` and return ``out_dir``.

    The saved tokenizer adds BOS exactly when llama.cpp does (the GGUF's ``tokenizer.ggml.add_bos_token``,
    true for Gemma); transformers' GGUF tokenizer loader drops that flag, and a Gemma prompt without
    ``<bos>`` gives different (worse) continuations in transformers and vLLM than in llama.cpp.
    ``add_bos_token`` overrides the GGUF's flag.

    ``dtype`` is the dtype of the saved weights ("float32" is safe on any CPU; "bfloat16"/"float16" halve
    the size). A folder already converted from the same file (same size and mtime) is reused unless
    ``overwrite``.
    """
    gguf = Path(gguf_path).expanduser().resolve()
    out = Path(out_dir).expanduser()
    if not gguf.is_file():
        raise FileNotFoundError(gguf)
    stat = gguf.stat()
    source = {"gguf": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "dtype": dtype}
    marker = out / _MARKER
    if not overwrite and marker.is_file():
        try:
            cached = json.loads(marker.read_text())
        except (OSError, ValueError):
            cached = None
        # the marker's add_bos_token came from this very file (same size and mtime): reading the GGUF's
        # metadata again would cost ~9 s (GGUFReader parses the whole vocabulary)
        if (isinstance(cached, dict) and {k: cached.get(k) for k in source} == source
                and isinstance(cached.get("add_bos_token"), bool)
                and (add_bos_token is None or cached["add_bos_token"] == add_bos_token)):
            return out
    if add_bos_token is None:
        add_bos_token = _gguf_add_bos(gguf)
    source["add_bos_token"] = add_bos_token

    # imported after the cache check: a cached folder costs no torch/transformers import (~10 s)
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "converting GGUF to HF needs transformers, torch and gguf: run it in vLLM's environment"
        ) from exc
    torch_dtype = getattr(torch, dtype)
    folder, name = str(gguf.parent), gguf.name
    log.info("converting %s to an HF model in %s", gguf, out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, add_bos_token=add_bos_token)
    if tokenizer.bos_token_id is not None:
        probe = tokenizer("x").input_ids
        if add_bos_token != (bool(probe) and probe[0] == tokenizer.bos_token_id):
            raise RuntimeError(f"could not make the tokenizer add_bos_token={add_bos_token} (got {probe[:3]})")
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)

    # A fresh model from the same config, with the dequantized weights copied in: nothing of the GGUF
    # loading path (quantization metadata, hooks) stays attached to what we save.
    config.dtype = torch_dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_tied(fresh, k)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> HF weight mismatch: missing={missing[:8]} unexpected={unexpected[:8]}")
    fresh.tie_weights()
    fresh = fresh.to(torch_dtype)
    del loaded, state

    out.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps(source))
    return out


def _gguf_add_bos(gguf: Path) -> bool:
    """The GGUF's ``tokenizer.ggml.add_bos_token`` (True when absent, as llama.cpp assumes for SPM vocabs)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return True
    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.add_bos_token")
    if field is None or not field.data:
        return True
    return bool(field.parts[field.data[0]][0])


def _is_tied(model, key: str) -> bool:
    """Keys such as ``lm_head.weight`` that are tied to the input embeddings need no copy."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return False
    out_emb = model.get_output_embeddings()
    return out_emb is not None and key.startswith("lm_head.")
