"""The in-process transformers engine: one base model, every tuned LoRA adapter loaded next to
it (peft multi-adapter), and a worker thread that batches concurrent requests.

Requests are queued (bounded: a full queue raises `BusyError`), the worker gathers those that
share a model/adapter and sampling settings for a few milliseconds, left-pads them and runs one
`generate` per group with that adapter active ("base" runs with adapters disabled), so requests
never see each other's adapter. A per-row stopping criterion streams text, honours each
request's own token limit and stop strings, and stops a row whose client left or timed out.
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
from transformers import StoppingCriteriaList

from serving.batching import BatchTracker, Job, JobQueue
from serving.config import EngineConfig
from serving.generation import Engine, GenerationTimeout, check_model
from serving.reasoning import prompt_opens_thinking
from ragtune.errors import ModelNotFoundError, RagtuneError
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


def _attach_adapter(model: Any, name: str, path: Path) -> Any:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        return model
    return PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False)


class TransformersGenerator(Engine):
    """Base model + named LoRA adapters, served through a dynamic-batching worker thread."""

    def __init__(self, model: Any, tokenizer: Any, config: EngineConfig | None = None,
                 adapters: Sequence[str] = ()) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config or EngineConfig()
        self.adapters = list(adapters)
        self.device = next(model.parameters()).device
        self._queue = JobQueue(self.config.max_queue, self.config.max_batch_size,
                               self.config.batch_wait_ms / 1000)
        self._tok_lock = threading.Lock()
        self._eos_ids = _eos_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else min(self._eos_ids)
        think = set(tokenizer.convert_tokens_to_ids(["<think>", "</think>"])) - {None}
        self._drop_ids = set(tokenizer.all_special_ids) - think
        self._max_positions = getattr(model.config, "max_position_embeddings", None)
        self.finished: Counter[str] = Counter()  # rows by finish reason, for /health and tests
        self.runs_dir: Path | None = None  # rescanned for adapters of runs finished later
        self._model_lock = threading.Lock()  # adapter loading vs the generating worker
        self._last_scan = 0.0
        self._worker = threading.Thread(target=self._loop, name="ragtune-generate", daemon=True)
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
        from serving.adapters import discover_adapters
        from ragtune.models import resolve_generator

        resolved = resolve_generator(settings.generator, settings.paths.models_dir)
        adapters = {**discover_adapters(settings.paths.runs_dir), **(extra_adapters or {})}
        log.info("loading %s (%s) with adapters %s", resolved.location, resolved.how,
                 sorted(adapters) or "none")
        generator = cls.load(resolved.location, adapters,
                             config or EngineConfig.from_settings(settings))
        generator.runs_dir = settings.paths.runs_dir
        return generator

    def models(self) -> list[str]:
        self._load_new_adapters()
        return ["base", *self.adapters]

    def _load_new_adapters(self, min_interval_s: float = 2.0) -> None:
        """Attach adapters of runs that finished after start-up (rescans at most every 2 s)."""
        from serving.adapters import discover_adapters

        now = time.monotonic()
        if self.runs_dir is None or now - self._last_scan < min_interval_s:
            return
        self._last_scan = now
        new = {name: path for name, path in discover_adapters(self.runs_dir).items()
               if name not in self.adapters}
        for name, path in new.items():
            with self._model_lock:
                try:
                    self.model = _attach_adapter(self.model, name, path)
                except (OSError, ValueError, RuntimeError, KeyError) as err:
                    log.warning("adapter %s (%s) not loaded: %s", name, path, err)
                    continue
                self.model.eval()
                self.adapters.append(name)
            log.info("loaded adapter %s from %s", name, path)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ----------------------------------------------------------------------------- requests
    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees: its chat template with the generation prompt."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(request.messages, tokenize=False,
                                                      add_generation_prompt=True)
        turns = [f"{m['role']}: {m['content']}" for m in request.messages]
        return "\n".join(turns) + "\nassistant:"

    def submit(self, request: GenerationRequest, cancel: threading.Event | None = None,
               stream: bool = False) -> Job:
        """Validate, tokenize and queue a request; the returned job resolves when it is done."""
        check_model(self, request.model)
        prompt = self.render(request)
        with self._tok_lock:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if self._max_positions and len(ids) + request.max_new_tokens > self._max_positions:
            raise PromptTooLong(
                f"the prompt has {len(ids)} tokens; with max_new_tokens={request.max_new_tokens} "
                f"it exceeds the model's context of {self._max_positions} tokens")
        job = Job(request, ids, time.monotonic() + self.config.request_timeout_s,
                  think=prompt_opens_thinking(prompt),
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
            for request in requests:  # queued together: batched together
                jobs.append(self.submit(request))
        except BaseException:
            for job in jobs:
                job.cancels[-1].set()
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
            job.cancels[-1].set()  # the consumer left: stop generating for it

    def _wait(self, job: Job) -> GenerationResult:
        try:
            return job.future.result(timeout=self._grace(job))
        except FutureTimeout:
            job.cancels[-1].set()
            raise GenerationTimeout(self._timeout_message()) from None

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
    def _loop(self) -> None:
        while (group := self._queue.next_group()) is not None:
            live = [job for job in group if self._still_wanted(job)]
            if not live:
                continue
            started = time.perf_counter()
            try:
                with self._model_lock:
                    self._run_group(live)
            except Exception as err:  # noqa: BLE001 - a failed batch must not kill the worker
                log.exception("generation failed for a batch of %d", len(live))
                for job in live:
                    job.finish(RagtuneError(f"generation failed: {err}"))
            self._queue.record(time.perf_counter() - started)

    def _still_wanted(self, job: Job) -> bool:
        if job.cancelled():
            self.finished["cancelled"] += 1
            job.finish(GenerationResult("", len(job.prompt_ids), 0, "cancelled"))
            return False
        if job.expired():
            self.finished["timeout"] += 1
            job.finish(GenerationTimeout(self._timeout_message()))
            return False
        return True

    def _run_group(self, jobs: list[Job]) -> None:
        """Left-pad the group's prompts and run one `generate` with its adapter."""
        width = max(len(job.prompt_ids) for job in jobs)
        ids = torch.full((len(jobs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids):] = 1
        tracker = BatchTracker(jobs, self._eos_ids, self._decode)
        request = jobs[0].request
        if request.seed is not None:
            torch.manual_seed(request.seed)
        with torch.inference_mode(), self._adapter(request.model):
            self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                generation_config=self._generation_config(jobs),
                                stopping_criteria=StoppingCriteriaList([tracker]))
        for row in tracker.rows:
            self.finished[row.finish or "length"] += 1
            if row.finish == "timeout":
                row.job.finish(GenerationTimeout(self._timeout_message()))
                continue
            result = tracker.result(row)
            tracker.flush(row, result)
            row.job.finish(result)

    def _generation_config(self, jobs: list[Job]) -> Any:
        import copy

        config = copy.deepcopy(self.model.generation_config)
        request = jobs[0].request
        sample = request.temperature > 0
        config.update(max_new_tokens=max(job.request.max_new_tokens for job in jobs),
                      do_sample=sample, temperature=request.temperature if sample else 1.0,
                      top_p=request.top_p if sample else 1.0, top_k=None if sample else 50,
                      num_beams=1, pad_token_id=self._pad_id,
                      eos_token_id=sorted(self._eos_ids), max_length=None)
        return config

    @contextlib.contextmanager
    def _adapter(self, name: str) -> Iterator[None]:
        """Activate an adapter, or disable all of them for "base" (worker thread only)."""
        if not self.adapters:
            yield
            return
        if name == "base":
            with self.model.disable_adapter():
                yield
            return
        self.model.set_adapter(name)
        yield

    def _decode(self, tokens: list[int]) -> str:
        kept = [t for t in tokens if t not in self._drop_ids]
        return self.tokenizer.decode(kept, skip_special_tokens=False)


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
