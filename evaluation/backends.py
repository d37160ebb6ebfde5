"""Where eval gets its answers: in process (the service's batched generator) or a live server.

Both answer a list of questions for one configuration (model, RAG on/off) and return, for
each, the reply, the reasoning and the sources of the passages the prompt held, in [n] order.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.errors import DatasetError, RagtuneError
from ragtune.datasets import read_rows
from ragtune.types import GenerationResult, Generator
from serving.assistant import Params
from serving.reasoning import split_reasoning

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """One answer as eval scores it."""

    answer: str
    reasoning: str = ""
    sources: list[str] = field(default_factory=list)  # passage sources; [n] cites sources[n-1]
    completion_tokens: int = 0
    answer_kind: str = "generated"  # generated | extracted | refused (the service's verdict)
    grounding: dict[str, Any] = field(default_factory=dict)
    generated: str = ""  # the model's own text when the service replaced it
    pages: list[int | None] = field(default_factory=list)  # page of each passage, [n] order


class Answerer(ABC):
    """Answers eval questions for one configuration at a time."""

    @abstractmethod
    def models(self) -> list[str]:
        """Model names accepted: "base" first, then tuned adapters."""

    @abstractmethod
    def answer(self, questions: Sequence[str], *, model: str, use_rag: bool, top_k: int,
               max_new_tokens: int) -> list[Reply]:
        """Answer a batch of questions (greedy decoding), results in question order."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and connections."""


class AssistantAnswerer(Answerer):
    """In process, through the service's Assistant: its retrieval, prompt layout and refusal
    rule, with all questions of a call handed to the batched engine as one list."""

    def __init__(self, assistant: Any) -> None:
        self.assistant = assistant

    def models(self) -> list[str]:
        return self.assistant.models()

    def answer(self, questions: Sequence[str], *, model: str, use_rag: bool, top_k: int,
               max_new_tokens: int) -> list[Reply]:
        prompts = [self.assistant.prepare(q, use_rag=use_rag, top_k=top_k) for q in questions]
        params = Params(model=model, max_new_tokens=max_new_tokens, temperature=0.0)
        pending = [p for p in prompts if p.refusal is None]
        results = iter(self._generate(pending, params))
        replies = []
        for prompt in prompts:
            sources = [s.source for s in prompt.sources]
            pages = [s.page for s in prompt.sources]
            if prompt.refusal is not None:  # nothing relevant retrieved: the service refuses
                _, kind, verdict = self.assistant.ground(prompt, prompt.refusal, refused=True)
                replies.append(Reply(prompt.refusal, "", sources, 0, kind, verdict, pages=pages))
                continue
            result = next(results)
            reasoning, text = split_reasoning(result.text)
            final, kind, verdict = self.assistant.ground(prompt, text)
            replies.append(Reply(final, reasoning, sources, result.completion_tokens, kind,
                                 verdict, text if final != text else "", pages))
        return replies

    def _generate(self, prompts: Sequence[Any], params: Params) -> list[GenerationResult]:
        """The model's texts (GenerationResult: `.text`, `.completion_tokens`) for the prompts
        that passed the gate, in order: one batched engine call."""
        return self.assistant.generator.generate(
            [self.assistant.request(p, params) for p in prompts])

    def close(self) -> None:
        self.assistant.generator.close()


class NoGeneration(Generator):
    """The generator of a replay: it loads no model and refuses to generate."""

    def models(self) -> list[str]:
        return ["base"]

    def generate(self, requests: Sequence[Any]) -> list[Any]:
        raise RagtuneError("a replayed eval generates nothing")

    def stream(self, request: Any) -> Iterator[str]:
        raise RagtuneError("a replayed eval generates nothing")


class ReplayAnswerer(AssistantAnswerer):
    """An earlier eval's model texts (`answers.jsonl`) through today's retrieval, gate and
    grounding check, generating nothing: what a change of the check or the quotes does to the
    answers users get, answer for answer, in seconds instead of a generation run (greedy
    decoding makes the texts what a re-run would write, as long as the prompt is unchanged).

    A question the earlier run's gate refused has no text to replay; if today's gate lets it
    through, the replay stops and says so (run a full eval then)."""

    def __init__(self, assistant: Any, answers: Path) -> None:
        super().__init__(assistant)
        self.source = answers
        self.rows: dict[tuple[str, bool, str], dict[str, Any]] = {}
        for number, row in read_rows(answers):
            try:
                self.rows[(row["model"], bool(row["rag"]), row["question"])] = row
            except (KeyError, TypeError) as err:
                raise DatasetError(answers, f"not an eval answer row ({err})", row=number) \
                    from None

    def models(self) -> list[str]:
        names = list(dict.fromkeys(model for model, _, _ in self.rows))
        return ["base", *[n for n in names if n != "base"]]

    def _generate(self, prompts: Sequence[Any], params: Params) -> list[GenerationResult]:
        out = []
        for prompt in prompts:
            row = self.rows.get((params.model, prompt.use_rag, prompt.question))
            if row is None or not row.get("completion_tokens"):
                what = "has no answer" if row is None else "was refused before generating"
                raise DatasetError(
                    self.source, f"{params.model}{'+RAG' if prompt.use_rag else ''} {what} "
                    f"for {prompt.question!r}, so there is no text to replay",
                    hint="run a full eval")
            # `generated` holds the model's text when the service replaced it (a quote always
            # does, so an empty text quoted over stays empty); otherwise the answer is the text
            replaced = row.get("generated") or row.get("answer_kind") == "extracted"
            own = row.get("generated", "") if replaced else row.get("answer") or ""
            reasoning = row.get("reasoning") or ""
            text = f"<think>\n{reasoning}\n</think>\n\n{own}" if reasoning else own
            out.append(GenerationResult(text, 0, int(row["completion_tokens"])))
        return out

    def close(self) -> None:
        """Nothing was loaded but the index, which `run` closes."""


class HttpAnswerer(Answerer):
    """A live ragtune server: POST /ask per question, several in flight so the server batches."""

    def __init__(self, url: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 600.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.concurrency = concurrency

    def _get(self, path: str) -> dict:
        import httpx

        try:
            response = self.client.get(path)
        except httpx.HTTPError as err:
            raise RagtuneError(f"cannot reach the ragtune server at {self.url}: {err}") from None
        self._check(response, path)
        return response.json()

    def _check(self, response, path: str) -> None:
        if response.status_code >= 400:
            raise RagtuneError(f"{self.url}{path} answered {response.status_code}: "
                               f"{response.text[:300]}")

    def models(self) -> list[str]:
        ids = [m["id"] for m in self._get("/v1/models").get("data", [])]
        return ["base", *[i for i in ids if i != "base"]]

    def _ask(self, payload: dict) -> Reply:
        import httpx

        for attempt in range(30):
            try:
                response = self.client.post("/ask", json=payload)
            except httpx.HTTPError as err:
                raise RagtuneError(f"POST {self.url}/ask failed: {err}") from None
            if response.status_code != 503:
                break
            time.sleep(float(response.headers.get("Retry-After", 1)) * (1 + attempt % 3))
        self._check(response, "/ask")
        body = response.json()
        usage = body.get("usage") or {}
        return Reply(body.get("answer", ""), body.get("reasoning") or "",
                     [s.get("source", "") for s in body.get("sources") or []],
                     int(usage.get("completion_tokens", 0)), body.get("answer_kind", "generated"),
                     body.get("grounding") or {}, body.get("generated") or "",
                     [s.get("page") for s in body.get("sources") or []])

    def answer(self, questions: Sequence[str], *, model: str, use_rag: bool, top_k: int,
               max_new_tokens: int) -> list[Reply]:
        payloads = [{"question": q, "use_rag": use_rag, "top_k": top_k, "model": model,
                     "max_new_tokens": max_new_tokens, "temperature": 0.0, "stream": False}
                    for q in questions]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._ask, payloads))

    def close(self) -> None:
        self.client.close()
