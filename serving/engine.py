"""The in-process transformers engine: one base model, every tuned LoRA adapter loaded next to
it (peft multi-adapter), and a worker thread that batches concurrent requests continuously.

Requests are tokenized here and queued (bounded: a full queue raises `BusyError`, which the
API turns into 503 + Retry-After); the worker (`serving.continuous.ContinuousBatcher`) lets
each one join the running batch at the next decode step and leave it as soon as it finishes,
with its own token limit, stop strings, stream, cancel flag and deadline. Rows of different
adapters decode in separate sub-batches of the same step ("base" with adapters disabled), so
a request never sees another's adapter. Every prompt's shared system-prompt prefix is
prefilled once per model/adapter and reused (`PrefixCache`).

Adapters of runs that finish after start-up are found by a background scan (`models()` never
blocks: it may run on the event loop) and attached between two decode steps, one load per
adapter however many requests ask for it at once (`refresh_adapters`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import torch

from serving.adapters import discover_adapters, mismatch
from serving.attention import use_decode_attention
from serving.batching import Job, JobQueue, Row, Rules
from serving.blockquant import KernelUnavailable, StepThreads, kernel, use_block_kernels
from serving.config import EngineConfig
from serving.continuous import ContinuousBatcher
from serving.generation import Engine, GenerationTimeout, check_model
from serving.kvcache import PrefixCache
from serving.reasoning import prompt_opens_thinking
from serving.repeats import RepeatBan
from ragtune.errors import ConfigError, ModelNotFoundError, RagtuneError
from ragtune.settings import Settings
from ragtune.types import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)


class PromptTooLong(RagtuneError):
    """The prompt plus the requested tokens do not fit the model's context window."""

    http_status = 413


def pick_device(device: str) -> str:
    """Resolve "auto" to cuda, then mps, then cpu."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """float32 on CPU; bfloat16 (or float16 where unsupported) on accelerators."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device == "mps" else torch.float32


def load_model(location: str, adapters: dict[str, Path],
               config: EngineConfig) -> tuple[Any, Any, list[str]]:
    """Load tokenizer, base model and adapters; adapters that fail to load are skipped (logged)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(config.device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        dtype = pick_dtype(config.dtype, device)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"cannot load generator {location!r}: {err}") from err
    model.to(device).eval()
    _block_kernels(model, config, device)
    loaded: list[str] = []
    for name, path in adapters.items():
        try:
            model = _attach_adapter(model, name, path)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            log.warning("adapter %s (%s) not loaded: %s", name, path, err)
            continue
        loaded.append(name)
    model.eval()
    return tokenizer, model, loaded


# Forwards of up to this many token rows (decode steps and short prefill chunks) run on the
# block kernels: measured in the worker thread on SmolLM2-135M, a 24-row prefill chunk took
# 97 ms against 140 ms dense, 64 rows 184 against 195, 128 rows 386 against 312.
BLOCK_ROWS = 64


def _block_kernels(model: Any, config: EngineConfig, device: str) -> None:
    """Serve grid-exact weights packed (`serving.blockquant`), before adapters wrap them."""
    if config.weight_kernel == "dense":
        return
    if device != "cpu" or model.dtype != torch.float32:
        if config.weight_kernel == "block":
            raise ConfigError("weight_kernel", "block", f"needs float32 on cpu, not "
                              f"{model.dtype} on {device}")
        return
    try:
        report = use_block_kernels(model, max_rows=max(config.max_batch_size, BLOCK_ROWS))
    except KernelUnavailable as err:
        if config.weight_kernel == "block":
            raise ConfigError("weight_kernel", "block", str(err)) from err
        log.warning("%s; serving dense fp32 weights", err)
        return
    if report.packed:
        from serving.fusedlayers import use_fused_layers  # imports transformers' Llama

        decode = use_decode_attention(model, kernel())
        fused = use_fused_layers(model, kernel())
        log.info("%s%s%s", report, "; decode attention on the kernel" if decode else "",
                 f"; {fused} layers with fused norms and rotary" if fused else "")


def _attach_adapter(model: Any, name: str, path: Path) -> Any:
    from peft import PeftModel

    why = mismatch(model, path)
    if why:
        raise ValueError(why)

    if isinstance(model, PeftModel):
        model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        return model
    return PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)


class TransformersGenerator(Engine):
    """Base model + named LoRA adapters, served through a continuous-batching worker thread."""

    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig | None = None,
                 adapters: Sequence[str] = ()) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        self.adapters = list(adapters)
        self.device = next(model.parameters()).device
        self._queue = JobQueue(self.config.max_queue, self.config.batch_wait_ms / 1000,
                               self._dropped)
        self._tok_lock = threading.Lock()
        eos_ids = _eos_ids(model, tokenizer)
        ban = RepeatBan(self._decode) if self.config.repeat_ban else None
        self._rules = Rules(frozenset(eos_ids), self._decode, self.config.repeat_guard_tokens,
                            ban)
        think = set(tokenizer.convert_tokens_to_ids(["<think>", "</think>"])) - {None}
        self._drop_ids = set(tokenizer.all_special_ids) - think
        self._max_positions = getattr(model.config, "max_position_embeddings", None)
        self.finished: Counter[str] = Counter()  # rows by finish reason, for /health and tests
        self.adapter_loads: Counter[str] = Counter()  # attach attempts per adapter name
        self.runs_dir: Path | None = None  # rescanned for adapters of runs finished later
        self._model_lock = threading.Lock()  # adapter attaching vs one step of the worker
        self._refresh_lock = threading.Lock()  # one adapter scan/attach at a time
        self._last_scan = time.monotonic()
        self._rejected: dict[str, float] = {}  # adapter name -> files' mtime when it failed
        self._active: str | None = None  # "base", the adapter peft has active, None: unknown
        self._prefix_ids: dict[str | None, list[int]] = {}  # system text (None: none) -> ids
        self._openings: dict[tuple[str, ...], tuple[int, ...]] = {}  # see opening_ids
        self._cache_arg = _cache_argument(model)
        self._threads = StepThreads(model)
        self.prefixes = PrefixCache(self.config.prefix_cache_entries)
        self._batcher = ContinuousBatcher(
            self._queue, self._forward, self._model_lock, self._rules, self._finish,
            self.config.max_batch_size, self.config.prefill_chunk_tokens, self.prefixes)
        self._worker = threading.Thread(target=self._batcher.run, args=(self.device,),
                                        name="ragtune-generate", daemon=True)
        self._worker.start()

    @classmethod
    def load(cls, location: str, adapters: dict[str, Path] | None = None,
             config: EngineConfig | None = None) -> TransformersGenerator:
        """Load a model directory / HF id and the given `{name: adapter_dir}`."""
        config = config or EngineConfig()
        tokenizer, model, loaded = load_model(location, adapters or {}, config)
        return cls(model, tokenizer, config, loaded)

    @classmethod
    def from_settings(cls, settings: Settings, config: EngineConfig | None = None,
                      extra_adapters: dict[str, Path] | None = None) -> TransformersGenerator:
        """The settings' generator plus every adapter under `runs/*/adapter`."""
        from ragtune.models import resolve_generator

        resolved = resolve_generator(settings.generator, settings.paths.models_dir)
        adapters = {**discover_adapters(settings.paths.runs_dir), **(extra_adapters or {})}
        log.info("loading %s (%s) with adapters %s", resolved.location, resolved.how,
                 sorted(adapters) or "none")
        generator = cls.load(resolved.location, adapters,
                             config or EngineConfig.from_settings(settings))
        generator.runs_dir = settings.paths.runs_dir
        generator._rejected = {name: _stamp(path) for name, path in adapters.items()
                               if name not in generator.adapters and path.is_dir()}
        return generator

    # ------------------------------------------------------------------------- adapters
    def models(self) -> list[str]:
        """The served models now; never blocks (it runs on the event loop): when a rescan
        is due it starts one in the background, and adapters it finds show up once attached."""
        if self.runs_dir is not None and time.monotonic() - self._last_scan >= 2.0 \
                and not self._refresh_lock.locked():
            self._last_scan = time.monotonic()
            threading.Thread(target=self.refresh_adapters, name="ragtune-adapters",
                             daemon=True).start()
        return ["base", *self.adapters]

    def refresh_adapters(self) -> list[str]:
        """Scan `runs_dir` and attach adapters of runs finished since (blocking; one caller at
        a time, so concurrent callers never load the same adapter twice). The newly attached."""
        if self.runs_dir is None:
            return []
        attached: list[str] = []
        with self._refresh_lock:
            self._last_scan = time.monotonic()
            new = {name: path for name, path in discover_adapters(self.runs_dir).items()
                   if name not in self.adapters
                   and self._rejected.get(name) != _stamp(path)}
            for name, path in new.items():
                self.adapter_loads[name] += 1
                with self._model_lock:  # waits for one decode step at most
                    try:
                        self.model = _attach_adapter(self.model, name, path)
                    except (OSError, ValueError, RuntimeError, KeyError) as err:
                        log.warning("adapter %s (%s) not loaded: %s", name, path, err)
                        self._rejected[name] = _stamp(path)  # retried once its files change
                        continue
                    self.model.eval()
                    self._active = None  # peft may have switched the active adapter
                    self.adapters.append(name)
                attached.append(name)
                log.info("loaded adapter %s from %s", name, path)
        return attached

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ----------------------------------------------------------------------------- requests
    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: its chat template with the generation prompt."""
        return self._render(request.messages, True)

    def _render(self, messages: list[Any], generation_prompt: bool) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt)
        turns = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join(turns) + ("\nassistant:" if generation_prompt else "\n")

    def _shared_prefix(self, request: GenerationRequest, prompt: str, ids: list[int]) -> int:
        """How many leading prompt ids every prompt of its kind shares, the part the prefix
        cache may serve: the rendered system message (every RAG prompt's), or, for a
        conversation that opens with a user turn, what the template puts before any user text
        (SmolLM2's and Qwen's default system block). 0 when it is not a clean token prefix."""
        messages = request.messages
        if self.config.prefix_cache_entries <= 0 or not messages:
            return 0
        if messages[0].get("role") == "system" and len(messages) >= 2:
            key = messages[0]["content"]
        elif messages[0].get("role") == "user":
            key = None
        else:
            return 0
        prefix = self._prefix_ids.get(key)
        if prefix is None:
            prefix = self._system_ids(messages[0], prompt) if key is not None \
                else self._template_ids()
            if len(self._prefix_ids) > 64:
                self._prefix_ids.clear()
            self._prefix_ids[key] = prefix
        fits = 0 < len(prefix) < len(ids) and ids[: len(prefix)] == prefix
        return len(prefix) if fits else 0

    def _system_ids(self, system: Any, prompt: str) -> list[int]:
        try:
            text = self._render([system], False)
        except Exception:  # noqa: BLE001 - templates that refuse a lone system turn
            return []
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] \
            if text and prompt.startswith(text) else []

    def _template_ids(self) -> list[int]:
        """The ids two different one-question prompts share from the start: the template's own
        opening (a default system block, the user turn's header)."""
        try:
            a, b = (self._render([{"role": "user", "content": c}], True) for c in ("x", "y"))
        except Exception:  # noqa: BLE001 - a template that needs more than one user turn
            return []
        ids_a, ids_b = (self.tokenizer(t, add_special_tokens=False)["input_ids"]
                        for t in (a, b))
        shared = 0
        while shared < min(len(ids_a), len(ids_b)) and ids_a[shared] == ids_b[shared]:
            shared += 1
        return ids_a[:shared]

    def submit(self, request: GenerationRequest, cancel: threading.Event | None = None,
               stream: bool = False) -> Job:
        """Validate, tokenize and queue a request; the returned job resolves when it is done."""
        if request.model not in self.adapters and request.model != "base":
            self.refresh_adapters()  # a run that finished a moment ago (off the event loop)
        check_model(self, request.model)
        prompt = self.render(request)
        with self._tok_lock:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            prefix_len = self._shared_prefix(request, prompt, ids)
        if self._max_positions and len(ids) + request.max_new_tokens > self._max_positions:
            raise PromptTooLong(
                f"the prompt has {len(ids)} tokens; with max_new_tokens={request.max_new_tokens} "
                f"it exceeds the model's context of {self._max_positions} tokens")
        job = Job(request, ids, time.monotonic() + self.config.request_timeout_s,
                  think=prompt_opens_thinking(prompt), prefix_len=prefix_len,
                  banned_first=self.opening_ids(request.banned_openings),
                  cancels=[cancel] if cancel is not None else [],
                  deltas=SimpleQueue() if stream else None)
        job.cancels.append(threading.Event())
        self._queue.put(job)
        return job

    def complete(self, request: GenerationRequest,
                 cancel: threading.Event | None = None) -> GenerationResult:
        return self._wait(self.submit(request, cancel))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        jobs: list[Job] = []
        try:
            for request in requests:  # queued together: they run together
                jobs.append(self.submit(request))
        except BaseException:
            for job in jobs:
                self._abandon(job)
            raise
        return [self._wait(job) for job in jobs]

    def stream_events(self, request: GenerationRequest, cancel: threading.Event | None = None
                      ) -> Iterator[str | GenerationResult]:
        """Queue now (so a full queue raises here), then iterate deltas and the result."""
        return self._drain(self.submit(request, cancel, stream=True))

    def _drain(self, job: Job) -> Iterator[str | GenerationResult]:
        deltas = job.deltas if job.deltas is not None else SimpleQueue()
        try:
            while True:
                try:
                    item = deltas.get(timeout=self._grace(job))
                except Empty:
                    raise GenerationTimeout(self._timeout_message()) from None
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, GenerationResult):
                    return
        finally:
            self._abandon(job)  # the consumer left: stop generating for it

    def _wait(self, job: Job) -> GenerationResult:
        try:
            return job.future.result(timeout=self._grace(job))
        except FutureTimeout:
            self._abandon(job)
            raise GenerationTimeout(self._timeout_message()) from None

    def _abandon(self, job: Job) -> None:
        """Nobody waits for this job any more: flag it, and free its queue slot at once."""
        job.cancels[-1].set()
        self._queue.discard(job)

    def _grace(self, job: Job) -> float:
        return max(job.deadline - time.monotonic(), 0) + 30.0

    def _timeout_message(self) -> str:
        return (f"generation did not finish within {self.config.request_timeout_s:g} s "
                "(request_timeout_s); ask for fewer tokens or retry later")

    def close(self) -> None:
        for job in self._queue.close():
            job.finish(RagtuneError("the generator was shut down"))
        self._worker.join(timeout=30)

    # ------------------------------------------------------------------------------- worker
    def _dropped(self, job: Job) -> None:
        """A queued job left before it ran (cancelled or past its deadline)."""
        self._finish(Row(job, self._rules, finish="cancelled" if job.cancelled() else "timeout"))

    def _finish(self, row: Row) -> None:
        """Resolve a finished row's job: its result, a timeout or the step's error."""
        self.finished[row.finish or "length"] += 1
        self._queue.record(time.monotonic() - row.started)
        if row.finish == "timeout":
            row.job.finish(GenerationTimeout(self._timeout_message()))
        elif row.finish == "error":
            row.job.finish(RagtuneError(f"generation failed: {row.error}"))
        else:
            result = row.result()
            row.flush(result)
            row.job.finish(result)

    def _forward(self, model: str, **inputs: Any) -> torch.Tensor:
        """One forward with `model`'s adapter; the last position's logits [B, V]."""
        inputs[self._cache_arg] = inputs.pop("past_key_values")
        self._threads.set_for(inputs["input_ids"].numel())
        with self._adapter(model):
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]

    @contextlib.contextmanager
    def _adapter(self, name: str) -> Iterator[None]:
        """Activate an adapter, or disable all of them for "base" (worker thread only).

        The LoRA layers are switched only when the wanted model changes, never per step:
        peft's `disable_adapter()` context computes the whole model's status on every entry
        (about 90 ms on SmolLM2-135M, more than the decode step itself), which made every
        base-model step cost twice the plain model's as soon as one adapter was loaded.
        """
        if not self.adapters:
            yield
            return
        if self._active != name:
            if name == "base":
                self.model.base_model.disable_adapter_layers()
            else:
                self.model.set_adapter(name)
                self.model.base_model.enable_adapter_layers()
            self._active = name
        yield

    def opening_ids(self, openings: tuple[str, ...]) -> tuple[int, ...]:
        """The token ids whose text starts with one of `openings` (leading spaces aside), found
        once per tuple by decoding the vocabulary (~50k tokens: a fraction of a second)."""
        if not openings:
            return ()
        if openings not in self._openings:
            with self._tok_lock:
                vocab = range(len(self.tokenizer))
                texts = self.tokenizer.batch_decode([[i] for i in vocab])
            self._openings[openings] = tuple(
                i for i, text in zip(vocab, texts, strict=True)
                if i not in self._drop_ids and text.lstrip().startswith(openings))
        return self._openings[openings]

    def _decode(self, tokens: list[int]) -> str:
        kept = [t for t in tokens if t not in self._drop_ids]
        return self.tokenizer.decode(kept, skip_special_tokens=False)


def _stamp(adapter_dir: Path) -> float:
    """The newest modification time of an adapter's files (a rewritten adapter is new)."""
    return max((f.stat().st_mtime for f in adapter_dir.iterdir() if f.is_file()), default=0.0)


def _cache_argument(model: Any) -> str:
    """The forward argument that takes the KV cache: `cache` in recent transformers (which
    deprecates `past_key_values`), `past_key_values` before."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters \
        else "past_key_values"


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a turn: the generation config's and the tokenizer's EOS."""
    ids: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ModelNotFoundError("the model defines no end-of-sequence token; cannot serve it")
    return ids
