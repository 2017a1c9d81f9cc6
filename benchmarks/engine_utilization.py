"""Does the pipeline keep a continuous-batching server busy? Wave scheduling against continuous, same run.

A local OpenAI-compatible server (a subprocess, stdlib asyncio) simulates continuous batching: ``slots``
sequences run at once, each sample holds a slot for ``prompt_tokens x prompt_s`` plus ``tokens x token_s``
seconds, and waiting samples queue. Completion lengths are lognormal (median ``median_tokens``, shape
``sigma``: a long tail); a sample reaches the right answer with a per-question probability drawn from
[p_low, p_high] and ends ``The answer is X.``, so the real grader grades it. ``n``, ``max_tokens``
(``finish_reason: length``, no answer), ``seed`` (same seed, same sample) and ``stop`` are honoured. The
server counts busy slot-seconds and exits by itself when idle.

The real pipeline (``label_shard``: sampling, OmegaPRM labelling, rows) drives it through the ``openai``
engine twice: "before" = global waves, one shard at a time; "after" = continuous scheduling with
``--shards-in-flight`` shards labelled concurrently by threads that share the engine (the flow-level
setting is another part of the issue; the benchmark drives ``label_shard`` itself). It prints slot
utilization (busy slot-seconds / (slots x wall)), tokens per second against the ceiling
(slots / token_s), and checks that both runs wrote identical labels. Target: utilization >= 0.9 after.

    python benchmarks/engine_utilization.py [--problems 96] [--token-ms 4] [--slots 64] [--shards-in-flight 12]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reporting import show_and_save  # noqa: E402
from steplabel.flows.config import RunConfig, parse_config  # noqa: E402
from steplabel.labelling.shard import RunContext, ShardPlan, label_shard, plan_shards  # noqa: E402
from steplabel.rollouts.engines.openai_compat import OpenAICompatEngine  # noqa: E402
from steplabel.rollouts.grading import Grader  # noqa: E402
from steplabel.rollouts.sources import load_problems  # noqa: E402
from steplabel.storage.schema import STEP_LABELS  # noqa: E402

OUT = Path(__file__).parent / "results" / "engine_utilization.json"
STEP = re.compile(r"^Step \d+:", re.MULTILINE)
MAX_BODY = 1 << 20


# ---------------------------------------------------------------- the simulated server


@dataclass(frozen=True)
class ServerSettings:
    slots: int
    token_s: float
    prompt_s: float
    median_tokens: float
    sigma: float
    p_low: float
    p_high: float
    idle_exit_s: float


class SimulatedServer:
    """Continuous batching as a semaphore of ``slots``: a sample holds one slot for its simulated time."""

    def __init__(self, settings: ServerSettings, answers: dict[str, str]) -> None:
        self.s = settings
        self.answers = answers
        self.slots = asyncio.Semaphore(settings.slots)
        self.busy_s = 0.0
        self.samples = 0
        self.completion_tokens = 0
        self.last_seen = time.monotonic()
        self.stop = asyncio.Event()

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest())

    def sample(self, prompt: str, seed: int, index: int, max_tokens: int, stop: list[str]) -> tuple[str, int, str]:
        """(text, completion tokens, finish reason) of one sample; the same arguments give the same sample."""
        question, _, after = prompt.rpartition("Question: ")[2].partition("\n")
        reference = self.answers.get(question)
        rng = self._rng(prompt, seed, index)
        tokens = max(8, round(math.exp(math.log(self.s.median_tokens) + self.s.sigma * rng.gauss(0, 1))))
        p_right = self._rng(question).uniform(self.s.p_low, self.s.p_high)
        right = reference is not None and rng.random() < p_right
        answer = reference if right else (str(int(reference) + 1) if reference and reference.lstrip("-").isdigit()
                                           else "unknown")
        first = len(STEP.findall(after)) + 1
        lines = [f"Step {first + j}: " + " ".join(f"w{rng.randint(0, 999)}" for _ in range(6)) + "."
                 for j in range(max(1, min(8, tokens // 25)))]
        text = "\n".join(lines) + f"\nThe answer is {answer}."
        finish = "stop"
        if tokens > max_tokens:  # cut off: no final answer
            tokens, finish = max_tokens, "length"
            text = "\n".join(lines[: max(1, len(lines) // 2)])
        for marker in stop:
            text = text.split(marker)[0] if marker else text
        return text, tokens, finish

    async def _occupy(self, seconds: float) -> None:
        async with self.slots:
            started = time.monotonic()
            await asyncio.sleep(seconds)
            self.busy_s += time.monotonic() - started

    async def complete(self, body: dict) -> dict:
        prompt = str(body["prompt"])
        n, seed, max_tokens = int(body.get("n", 1)), int(body.get("seed", 0)), int(body.get("max_tokens", 16))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        prompt_tokens = len(prompt) // 4
        samples = [self.sample(prompt, seed, i, max_tokens, stop) for i in range(n)]
        await asyncio.gather(*(self._occupy(prompt_tokens * self.s.prompt_s + t * self.s.token_s)
                               for _, t, _ in samples))
        total = sum(t for _, t, _ in samples)
        self.samples += n
        self.completion_tokens += total
        return {"id": "sim", "object": "text_completion", "model": body.get("model", "sim"),
                "choices": [{"index": i, "text": text, "finish_reason": finish}
                            for i, (text, _, finish) in enumerate(samples)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": total,
                          "total_tokens": prompt_tokens + total}}

    async def _route(self, method: str, path: str, body: bytes) -> tuple[str, dict]:
        self.last_seen = time.monotonic()
        if method == "POST" and path == "/v1/completions":
            return "200 OK", await self.complete(json.loads(body))
        if method == "GET" and path == "/stats":
            return "200 OK", {"busy_s": self.busy_s, "samples": self.samples,
                              "completion_tokens": self.completion_tokens, "time": time.monotonic()}
        if method == "POST" and path == "/shutdown":
            self.stop.set()
            return "200 OK", {}
        return "404 Not Found", {"error": {"message": f"no route {method} {path}"}}

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive: request line, headers, a Content-Length body; JSON back."""
        try:
            while not self.stop.is_set():
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode("latin-1").split(" ", 2)
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = min(int(value), MAX_BODY)
                status, payload = await self._route(method, path, await reader.readexactly(length))
                data = json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # a client went away, a bad request line, or the server is stopping
        finally:
            writer.close()

    async def serve(self) -> None:
        server = await asyncio.start_server(self.connection, "127.0.0.1", 0, backlog=1024)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            while not self.stop.is_set():  # stops by itself once nobody has called for idle_exit_s
                if time.monotonic() - self.last_seen > self.s.idle_exit_s:
                    break
                try:
                    await asyncio.wait_for(self.stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass


# ---------------------------------------------------------------- the pipeline side


def bench_config(args: argparse.Namespace, url: str, scheduling: str) -> RunConfig:
    return parse_config({
        "name": "engine-utilization",
        "source": {"kind": "builtin", "num_problems": args.problems},
        "policy": {"kind": "openai", "base_urls": [url], "model": "sim", "max_concurrency": args.concurrency,
                   "api_key_env": None, "timeout_s": 600, "split_n": args.split_n},
        "sampling": {"num_solutions": args.solutions, "max_tokens": args.max_tokens},
        "rollout": {"max_tokens": args.max_tokens},
        "labeler": {"name": "omegaprm", "k": args.k},
        "verification": {"sympy": None, "hybrid": None},
        "shard_size": args.shard_size,
        "orchestration": {"scheduling": scheduling},
    }, origin="engine_utilization")


def server_stats(client: httpx.Client, url: str) -> dict:
    return client.get(f"{url}/stats").json()


def run_phase(args: argparse.Namespace, url: str, scheduling: str, in_flight: int, grader: Grader) -> tuple[dict, dict]:
    """Label every shard; returns (measures, solution_id -> (labels, mc_scores))."""
    config = bench_config(args, url, scheduling)
    problems, _ = load_problems(config.source)
    plans = plan_shards(problems, config.shard_size, config.hash())
    ctx = RunContext.now("bench", config.hash())
    engine = OpenAICompatEngine([url], "sim", max_concurrency=args.concurrency, api_key_env=None, timeout_s=600,
                                split_n=args.split_n)
    labels: dict[str, tuple] = {}

    def one(plan: ShardPlan) -> None:
        tables, _ = label_shard(plan, config, ctx, policy=engine, completer=engine, grader=grader,
                                scheduling=config.orchestration.scheduling)
        for row in tables[STEP_LABELS].select(["solution_id", "labels", "mc_scores"]).to_pylist():
            labels[row["solution_id"]] = (row["labels"], row["mc_scores"])

    with httpx.Client(timeout=30) as client:
        before = server_stats(client, url)
        cpu, started = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            list(pool.map(one, plans))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        after = server_stats(client, url)
    engine.close()
    busy = after["busy_s"] - before["busy_s"]
    tokens = after["completion_tokens"] - before["completion_tokens"]
    samples = after["samples"] - before["samples"]
    return {
        "scheduling": scheduling,
        "shards_in_flight": in_flight,
        "wall_s": round(wall, 2),
        "samples": samples,
        "completion_tokens": tokens,
        "slot_utilization": round(busy / (args.slots * wall), 3),
        "full_slots_s": round(busy / args.slots, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "pipeline_cpu_cores": round(cpu / wall, 2),
        "labelled_solutions": len(labels),
    }, labels


def start_server(args: argparse.Namespace, answers: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, __file__, "serve", "--answers", str(answers), "--slots", str(args.slots),
           "--token-ms", str(args.token_ms), "--prompt-ms", str(args.prompt_ms),
           "--median-tokens", str(args.median_tokens), "--sigma", str(args.sigma),
           "--p-low", str(args.p_low), "--p-high", str(args.p_high)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"error: the simulated server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=["bench", "serve"], default="bench")
    parser.add_argument("--answers", type=Path, help="serve: JSON question -> reference")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--token-ms", type=float, default=4.0, help="decode time per token per slot")
    parser.add_argument("--prompt-ms", type=float, default=0.02, help="prefill time per prompt token")
    parser.add_argument("--median-tokens", type=float, default=60.0)
    parser.add_argument("--sigma", type=float, default=0.8, help="lognormal shape of completion lengths")
    parser.add_argument("--p-low", type=float, default=0.3)
    parser.add_argument("--p-high", type=float, default=0.9)
    parser.add_argument("--problems", type=int, default=96)
    parser.add_argument("--solutions", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=128, help="the openai engine's max_concurrency")
    parser.add_argument("--shards-in-flight", type=int, default=12)
    parser.add_argument("--split-n", action=argparse.BooleanOptionalAction, default=False,
                        help="one HTTP request per sample (servers that ignore n); off: n in one request, as vLLM "
                        "and SGLang honour it (the client's CPU per HTTP request is the limit on 2 cores)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    settings = ServerSettings(args.slots, args.token_ms / 1000, args.prompt_ms / 1000, args.median_tokens,
                              args.sigma, args.p_low, args.p_high, idle_exit_s=120.0)
    if args.mode == "serve":
        asyncio.run(SimulatedServer(settings, json.loads(args.answers.read_text())).serve())
        return

    problems, _ = load_problems(bench_config(args, "http://unused", "auto").source)
    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "answers.json"
        answers.write_text(json.dumps({p.question: p.reference for p in problems}))
        proc, url = start_server(args, answers)
        try:
            with Grader() as grader:
                before, labels_before = run_phase(args, url, "wave", 1, grader)
                after, labels_after = run_phase(args, url, "continuous", args.shards_in_flight, grader)
            httpx.post(f"{url}/shutdown", timeout=10)
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    ceiling = args.slots / settings.token_s
    result = {
        "workload": f"{args.problems} problems x {args.solutions} solutions, OmegaPRM k={args.k}, "
                    f"shard_size {args.shard_size}",
        "server": f"{args.slots} slots, {args.token_ms:g} ms/token, {args.prompt_ms:g} ms/prompt token, "
                  f"lognormal lengths median {args.median_tokens:g} sigma {args.sigma:g}, p in [{args.p_low}, {args.p_high}]",
        "engine_max_concurrency": args.concurrency,
        "token_ceiling_per_s": round(ceiling, 1),
        **{f"before_{k}": v for k, v in before.items()},
        **{f"after_{k}": v for k, v in after.items()},
        "speedup": round(before["wall_s"] / after["wall_s"], 2),
        "labels_identical": labels_before == labels_after,
    }
    ok = after["slot_utilization"] >= 0.9 and result["labels_identical"]
    verdict = (f"{'PASS' if ok else 'FAIL'}: slot utilization {before['slot_utilization']} (waves, one shard at a time) "
               f"-> {after['slot_utilization']} (continuous, {args.shards_in_flight} shards in flight), target >= 0.9; "
               f"labels identical: {result['labels_identical']}")
    show_and_save("engine utilization: simulated continuous-batching server", result, verdict, args.out)


if __name__ == "__main__":
    main()
