"""Generation by any OpenAI-compatible upstream server (vLLM, TGI, Ollama, llama.cpp server).

ragtune keeps retrieval and prompting; the upstream does the generation. "base" maps to
`upstream_model` (or the first model the upstream lists) and each tuned adapter name maps to
the upstream model of the same name (vLLM: `--enable-lora --lora-modules <run>=<run>/adapter`).
Reasoning that the upstream returns apart (`reasoning_content`) is folded back into
`<think>…</think>` so that every backend hands the Assistant the same text.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from serving.generation import Engine, GenerationTimeout, UpstreamError, check_model
from ragtune.errors import BusyError, ConfigError, ModelNotFoundError
from ragtune.settings import Settings
from ragtune.types import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

# Models whose chat template opens `<think>` in the prompt, so that, without a reasoning
# parser upstream, their text starts mid-reasoning and only closes with `</think>`.
OPENS_THINKING = re.compile(r"deepseek-r1|r1-distill|qwq", re.IGNORECASE)


def _reasoning_of(obj: Any) -> str:
    """`reasoning_content` (DeepSeek, vLLM) or `reasoning` (newer vLLM, Ollama), if present."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(obj, name, None)
        if value is None and getattr(obj, "model_extra", None):
            value = obj.model_extra.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


class OpenAIUpstreamGenerator(Engine):
    """A `Generator` that forwards chat requests to an OpenAI-compatible server."""

    def __init__(self, base_url: str, base_model: str, adapters: Sequence[str] = (),
                 api_key: str | None = None, timeout_s: float = 120.0,
                 opens_thinking: bool | None = None) -> None:
        from openai import OpenAI

        self.base_url, self.base_model = base_url, base_model
        self.opens_thinking = opens_thinking  # None: by the model's name (OPENS_THINKING)
        self.adapters = list(adapters)
        self.client = OpenAI(base_url=base_url, api_key=api_key or "not-needed",
                             timeout=timeout_s, max_retries=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIUpstreamGenerator:
        """Upstream from `upstream_base_url/api_key/model`; adapters from `runs/*/adapter`."""
        from serving.adapters import discover_adapters

        if not settings.upstream_base_url:
            raise ConfigError("upstream_base_url", None, "set it (e.g. "
                              "http://127.0.0.1:8001/v1) when generator_backend=openai")
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        adapters = sorted(discover_adapters(settings.paths.runs_dir))
        gen = cls(settings.upstream_base_url, settings.upstream_model or "", adapters, key,
                  settings.request_timeout_s, settings.upstream_opens_thinking)
        if not gen.base_model:
            gen.base_model = gen.first_upstream_model()
        return gen

    def first_upstream_model(self) -> str:
        """The first model the upstream lists (used when `upstream_model` is not set)."""
        try:
            listed = [m.id for m in self.client.models.list()]
        except Exception as err:  # noqa: BLE001 - any client failure becomes one clear error
            raise self._translate(err) from err
        if not listed:
            raise UpstreamError(f"the upstream at {self.base_url} lists no models; "
                                "set upstream_model")
        return listed[0]

    def models(self) -> list[str]:
        return ["base", *self.adapters]

    def upstream_name(self, model: str) -> str:
        check_model(self, model)
        return self.base_model if model == "base" else model

    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        params: dict[str, Any] = dict(model=self.upstream_name(request.model),
                                      messages=request.messages,
                                      max_tokens=request.max_new_tokens,
                                      temperature=request.temperature, top_p=request.top_p)
        if request.stop:  # OpenAI's API takes at most 4; the caller's own stops come first
            params["stop"] = request.stop[:4]
        if request.seed is not None:
            params["seed"] = request.seed
        return params

    def complete(self, request: GenerationRequest,
                 cancel: threading.Event | None = None) -> GenerationResult:
        params = self._params(request)
        try:
            reply = self.client.chat.completions.create(**params)
        except Exception as err:  # noqa: BLE001
            raise self._translate(err) from err
        choice = reply.choices[0]
        text = choice.message.content or ""
        reasoning = _reasoning_of(choice.message)
        if reasoning:
            text = f"<think>\n{reasoning}\n</think>\n\n{text}"
        elif self._opens_thinking(params["model"]) and "<think>" not in text:
            text = "<think>\n" + text
        usage = reply.usage
        return GenerationResult(text, usage.prompt_tokens if usage else 0,
                                usage.completion_tokens if usage else 0,
                                "length" if choice.finish_reason == "length" else "stop")

    def stream_events(self, request: GenerationRequest, cancel: threading.Event | None = None
                      ) -> Iterator[str | GenerationResult]:
        params = self._params(request)
        try:
            stream = self.client.chat.completions.create(
                **params, stream=True, stream_options={"include_usage": True})
        except Exception as err:  # noqa: BLE001
            raise self._translate(err) from err
        return self._relay(stream, cancel, self._opens_thinking(params["model"]))

    def _opens_thinking(self, upstream_model: str) -> bool:
        if self.opens_thinking is not None:
            return self.opens_thinking
        names = (upstream_model, self.base_model)
        return any(OPENS_THINKING.search(name or "") for name in names)

    def _relay(self, stream: Any, cancel: threading.Event | None, opens_thinking: bool
               ) -> Iterator[str | GenerationResult]:
        """Upstream chunks as text deltas, then the result with the upstream's usage."""
        parts: list[str] = []
        usage, finish, thinking = None, "stop", False
        try:
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                usage = chunk.usage or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish = "length" if choice.finish_reason == "length" else finish
                pieces, thinking = self._pieces(choice.delta, thinking)
                if opens_thinking and not parts and pieces and not pieces[0].lstrip().startswith(
                        "<think>"):
                    pieces[0] = "<think>\n" + pieces[0]  # R1 text that starts mid-reasoning
                for piece in pieces:
                    parts.append(piece)
                    yield piece
        except Exception as err:  # noqa: BLE001
            raise self._translate(err) from err
        finally:
            stream.close()
        yield GenerationResult("".join(parts), usage.prompt_tokens if usage else 0,
                               usage.completion_tokens if usage else len(parts),
                               finish)  # type: ignore[arg-type]

    @staticmethod
    def _pieces(delta: Any, thinking: bool) -> tuple[list[str], bool]:
        """Text pieces of one delta with `<think>` tags around reasoning, and the new state."""
        pieces: list[str] = []
        reasoning = _reasoning_of(delta)
        if reasoning:
            pieces.append(reasoning if thinking else "<think>\n" + reasoning)
            thinking = True
        if delta.content:
            if thinking:
                pieces.append("\n</think>\n\n")
                thinking = False
            pieces.append(delta.content)
        return pieces, thinking

    def _translate(self, err: Exception) -> Exception:
        """Map openai client errors to ragtune errors (and so to HTTP statuses)."""
        import openai

        if isinstance(err, openai.APITimeoutError):
            return GenerationTimeout(f"the upstream at {self.base_url} timed out")
        if isinstance(err, openai.APIConnectionError):
            return UpstreamError(f"cannot reach the upstream at {self.base_url}: {err}")
        if isinstance(err, openai.APIStatusError):
            detail = f"the upstream at {self.base_url} answered {err.status_code}: {err.message}"
            if err.status_code == 404:
                return ModelNotFoundError(detail)
            if err.status_code in (429, 503):
                return BusyError(detail, retry_after=2)
            return UpstreamError(detail)
        if isinstance(err, openai.OpenAIError):
            return UpstreamError(f"upstream error: {err}")
        return err

    def close(self) -> None:
        self.client.close()
