"""Benchmark: committing N step_labels rows through ShardStore vs. pyarrow writing the same table.

Measures
  (a) pyarrow alone: ``pq.write_table`` of the whole table with the store's Parquet options;
  (b) ``ShardStore.stage`` of the table split into shards + ``ShardStore.commit`` (hashing, fsync, manifest);
  (c) ``steplabel inspect DIR --json`` in a fresh process, imports and statistics included;
  (d) peak RSS of the process.
Targets: (b)/(a) <= 2.0, (c) < 3 s.

Rows are realistic ``step_labels`` rows: 2-6 steps per solution, 60-200 characters per step (distinct text
sliced from a random-word corpus so compression is not flattered), 100-400 character prompts.

    python benchmarks/storage_commit.py [--rows 1000000] [--shards 10] [--root DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steplabel.storage.schema import STEP_LABELS, STEP_LABELS_SCHEMA  # noqa: E402
from steplabel.storage.store import PARQUET_WRITE_OPTIONS, ShardStore  # noqa: E402

_WORDS = (
    "the of and to a in is that we for it as with be by this are on so then let which from equation value "
    "sum product total number each step first second third therefore thus hence since because multiply "
    "divide add subtract square root fraction integer prime factor solve compute simplify substitute "
    "equals gives remaining answer apples cost price per hour minutes distance speed triangle area angle "
    "radius circle probability ratio percent twice half three four five six seven eight nine ten hundred"
).split()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _corpus(rng: np.random.Generator, nbytes: int) -> bytes:
    """Random words mixed with numbers and a little punctuation (compresses roughly like real CoT text)."""
    vocab = np.array(_WORDS + [str(i) for i in range(2000)] + ["=", "+", "*", "/", "$", ".", ","], dtype=object)
    n_tokens = nbytes // 5
    return " ".join(vocab[rng.integers(0, len(vocab), n_tokens)]).encode()


def _strings(rng: np.random.Generator, corpus: bytes, n: int, lo: int, hi: int) -> pa.Array:
    lengths = rng.integers(lo, hi + 1, n)
    starts = rng.integers(0, len(corpus) - hi - 1, n)
    mv = memoryview(corpus)
    data = b"".join([mv[s : s + ln] for s, ln in zip(starts.tolist(), lengths.tolist())])
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def make_table(rows: int, *, seed: int = 0, run_id: str = "bench", n_shards: int = 10) -> pa.Table:
    rng = np.random.default_rng(seed)
    corpus = _corpus(rng, 32 * 1024 * 1024)
    k = rng.integers(2, 7, rows)  # steps per solution
    total = int(k.sum())
    list_off = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(k, out=list_off[1:])
    step_index = np.arange(total) - np.repeat(list_off[:-1], k)
    # first error: -1 for ~40% of solutions, otherwise a uniform step
    fe = np.where(rng.random(rows) < 0.4, -1, (rng.random(rows) * k).astype(np.int64)).astype(np.int32)
    fe_rep = np.repeat(fe, k)
    labels = (fe_rep < 0) | (step_index < fe_rep)
    mc_total = np.full(total, 8, dtype=np.int32)
    mc_correct = np.where(labels, rng.integers(1, 9, total), 0).astype(np.int32)
    mc_scores = (mc_correct / mc_total).astype(np.float32)

    def lst(values: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(list_off), values)

    shard_of_row = (np.arange(rows) * n_shards // rows).astype(np.int32)
    shard_names = pa.array([f"shard-{i:05d}" for i in range(n_shards)])
    ids = np.arange(rows)
    sol_ids = pa.array([f"sol-{i:09d}" for i in ids.tolist()])
    prob_ids = pa.array([f"prob-{i // 4:08d}" for i in ids.tolist()])
    verdicts = pa.array(["verified", "refuted", "unknown"]).take(pa.array(rng.integers(0, 3, total)))
    const = lambda v, t: pa.array(np.full(rows, v) if t != pa.string() else [v] * rows, t)  # noqa: E731
    cols = {
        "problem_id": prob_ids,
        "solution_id": sol_ids,
        "shard_id": shard_names.take(pa.array(shard_of_row)),
        "run_id": pa.array([run_id] * rows),
        "prompt": _strings(rng, corpus, rows, 100, 400),
        "completions": lst(_strings(rng, corpus, total, 60, 200)),
        "labels": lst(pa.array(labels)),
        "mc_scores": lst(pa.array(mc_scores)),
        "mc_correct": lst(pa.array(mc_correct)),
        "mc_total": lst(pa.array(mc_total)),
        "first_error": pa.array(fe),
        "labeler": const("hard_mc", pa.string()),
        "soft_labels": lst(pa.array(mc_scores)),
        "labeler_details": pa.nulls(rows, pa.string()),
        "tool_verdicts": lst(verdicts),
        "tool_evidence": pa.nulls(rows, pa.list_(pa.string())),
        "tool_first_error": pa.array(np.where(rng.random(rows) < 0.5, fe, -1).astype(np.int32)),
        "tool_checks": pa.nulls(rows, pa.string()),
        "labeler_labels": lst(pa.array(labels)),
        "judge_first_error": pa.nulls(rows, pa.int32()),
        "judge_rationale": pa.nulls(rows, pa.string()),
        "consensus": pa.array(rng.random(rows) < 0.8),
        "final_answer": pa.array(rng.integers(0, 1000, rows).astype(str).tolist()),
        "reference_answer": pa.array(rng.integers(0, 1000, rows).astype(str).tolist()),
        "final_correct": pa.array(fe < 0),
        "grader_layer": const("math_verify", pa.string()),
        "policy_model": const("Qwen/Qwen2.5-Math-7B-Instruct", pa.string()),
        "completer_model": const("Qwen/Qwen2.5-Math-7B-Instruct", pa.string()),
        "judge_model": pa.nulls(rows, pa.string()),
        "sampling": const('{"temperature": 0.7, "top_p": 0.95, "n": 8, "max_tokens": 1024}', pa.string()),
        "seed": pa.array(ids.astype(np.int64)),
        "config_hash": const("cfg-bench", pa.string()),
        "code_version": const("bench", pa.string()),
        "created_at": pa.array(
            np.full(rows, np.datetime64("2025-01-01T00:00:00", "us")), pa.timestamp("us", tz="UTC")
        ),
        "rollouts_used": pa.array((k * 8).astype(np.int32)),
        "tokens_generated": pa.array(rng.integers(200, 4000, rows).astype(np.int64)),
    }
    return pa.Table.from_pydict(cols, schema=STEP_LABELS_SCHEMA)


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        t.add_column("measure")
        t.add_column("value", justify="right")
        for a, b in rows:
            t.add_row(a, b)
        Console().print(t)
    except ImportError:
        print(title)
        w = max(len(a) for a, _ in rows)
        for a, b in rows:
            print(f"  {a.ljust(w)}  {b}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="step_labels rows (default 1,000,000)")
    ap.add_argument("--shards", type=int, default=10, help="shards the rows are split into (default 10)")
    ap.add_argument("--root", default=None, help="scratch directory (default: a temp dir, removed after)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "storage_commit.json"))
    args = ap.parse_args(argv)

    scratch = Path(args.root or tempfile.mkdtemp(prefix="steplabel-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        table = make_table(args.rows, n_shards=args.shards)
        t_gen = time.perf_counter() - t0
        steps = sum(len(c) for c in [table.column("labels").combine_chunks().flatten()])
        rss_after_gen = _rss_mb()

        # (a) pyarrow alone, same table, same options
        base_path = scratch / "baseline.parquet"
        t0 = time.perf_counter()
        pq.write_table(table, base_path, **PARQUET_WRITE_OPTIONS)
        t_pa = time.perf_counter() - t0
        pa_bytes = base_path.stat().st_size
        base_path.unlink()

        # (b) ShardStore.stage (per shard) + commit
        store = ShardStore(scratch / "store")
        bounds = [i * args.rows // args.shards for i in range(args.shards + 1)]
        t0 = time.perf_counter()
        for i in range(args.shards):
            part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
            store.stage("bench", f"shard-{i:05d}", {STEP_LABELS: part})
        t_stage = time.perf_counter() - t0
        t1 = time.perf_counter()
        m = store.commit("bench", config={"bench": True}, config_hash="cfg-bench", code_version="bench")
        t_commit_only = time.perf_counter() - t1
        t_store = time.perf_counter() - t0
        store_bytes = sum(e.bytes for e in m.tables[STEP_LABELS])

        # (c) the real `steplabel inspect DIR --json` in a fresh process (imports, manifest, statistics)
        t0 = time.perf_counter()
        printed = subprocess.run([sys.executable, "-m", "steplabel.cli", "inspect", str(scratch / "store"), "--json"],
                                 check=True, capture_output=True, text=True).stdout
        t_inspect = time.perf_counter() - t0
        summary = json.loads(printed)
        assert summary["solutions"] == args.rows and summary["steps"] == steps, summary

        peak = _rss_mb()
    finally:
        if args.root is None:
            shutil.rmtree(scratch, ignore_errors=True)

    ratio = t_store / t_pa
    result = {
        "benchmark": "storage_commit",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "pyarrow": pa.__version__, "cpus": os.cpu_count()},
        "rows": args.rows,
        "steps": steps,
        "shards": args.shards,
        "parquet_options": PARQUET_WRITE_OPTIONS,
        "in_memory_mb": round(table.nbytes / 2**20, 1),
        "generate_s": round(t_gen, 3),
        "pyarrow_write_s": round(t_pa, 3),
        "pyarrow_file_mb": round(pa_bytes / 2**20, 1),
        "store_stage_s": round(t_stage, 3),
        "store_commit_s": round(t_commit_only, 3),
        "store_total_s": round(t_store, 3),
        "store_files_mb": round(store_bytes / 2**20, 1),
        "commit_over_pyarrow": round(ratio, 3),
        "inspect_s": round(t_inspect, 4),
        "peak_rss_mb": round(peak, 1),
        "rss_after_generate_mb": round(rss_after_gen, 1),
        "targets": {"commit_over_pyarrow_max": 2.0, "inspect_s_max": 3.0},
        "pass": {"commit_over_pyarrow": ratio <= 2.0, "inspect_s": t_inspect < 3.0},
    }
    _print_table(
        f"storage_commit: {args.rows:,} step_labels rows ({steps:,} steps), {args.shards} shards",
        [
            ("table in memory", f"{result['in_memory_mb']} MiB"),
            ("generate table", f"{t_gen:.2f} s"),
            ("(a) pyarrow write_table", f"{t_pa:.2f} s  ({result['pyarrow_file_mb']} MiB)"),
            ("(b) store stage", f"{t_stage:.2f} s"),
            ("(b) store commit", f"{t_commit_only:.3f} s"),
            ("(b) store stage+commit", f"{t_store:.2f} s  ({result['store_files_mb']} MiB)"),
            ("(c) steplabel inspect --json (process)", f"{t_inspect:.2f} s"),
            ("(d) peak RSS", f"{peak:.0f} MiB"),
        ],
    )
    print(f"commit/pyarrow ratio: {ratio:.2f} (target <= 2.0) {'OK' if ratio <= 2.0 else 'OVER TARGET'}")
    print(f"inspect time: {t_inspect:.4f} s (target < 3 s) {'OK' if t_inspect < 3.0 else 'OVER TARGET'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
