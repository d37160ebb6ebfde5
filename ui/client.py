"""The UI's HTTP client for the ragtune API: /ask (JSON and SSE), /v1/models, /health and
/documents. Every failure becomes an `ApiError` whose message a person can read (the API's own
error message when it sent one; otherwise what went wrong and what to check), never a traceback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ragtune.errors import RagtuneError

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=60.0, pool=10.0)
# Ingesting a folder embeds every chunk before the API answers: minutes on a CPU.
INGEST_TIMEOUT = httpx.Timeout(connect=5.0, read=3600.0, write=600.0, pool=10.0)


class ApiError(RagtuneError):
    """The API could not be reached or answered with an error; `str()` is for people."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event of `/ask?stream`: kind is sources|reasoning|answer|done|error."""

    kind: str
    data: dict[str, Any]


def error_message(response: httpx.Response) -> str:
    """The API's `{"error": {"message"}}` (or FastAPI's `detail`), else the status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("detail"):
            return str(body["detail"])
    text = response.text.strip()[:200]
    return f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")


class ApiClient:
    """A small synchronous client; one instance per UI, safe to share between threads.

    The Bearer key is `api_key`, or, with `key_source`, whatever it returns at each call: the
    UI passes the logged-in visitor's key that way, so it never uses a key of its own."""

    def __init__(self, base_url: str, api_key: str | None = None,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 key_source: Callable[[], str | None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._key, self._key_source = api_key, key_source
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    def _auth(self) -> dict[str, str]:
        key = self._key_source() if self._key_source is not None else self._key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def bound(self) -> ApiClient:
        """This client with the current key fixed (for worker threads, which do not see the
        visitor of the request that started them); shares the connection pool."""
        view = copy.copy(self)
        view._key, view._key_source = self._auth().get("Authorization", "")[7:] or None, None
        return view

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ plumbing
    def _unreachable(self, err: httpx.HTTPError) -> ApiError:
        if isinstance(err, httpx.TimeoutException):
            return ApiError(f"the API at {self.base_url} did not answer in time "
                            f"({type(err).__name__}); the model may be busy, try again or "
                            "lower max_new_tokens")
        return ApiError(f"cannot reach the API at {self.base_url} ({err.__class__.__name__}: "
                        f"{err}); start it with `ragtune serve` or `ragtune ui --with_api`, or "
                        "set RAGTUNE_API_URL")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; the decoded JSON body, or ApiError with the API's message."""
        try:
            response = self._http.request(method, path, headers=self._auth(), **kwargs)
        except httpx.HTTPError as err:
            raise self._unreachable(err) from None
        if response.status_code >= 400:
            raise ApiError(error_message(response), response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"the API answered {path} with something that is not JSON: "
                           f"{response.text[:200]!r}", response.status_code) from None

    # ------------------------------------------------------------------ service
    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def whoami(self) -> dict[str, Any]:
        """`GET /auth/whoami`: {"role": "ask"|"admin", "auth": bool} for this client's key."""
        return self.request("GET", "/auth/whoami")

    def models(self) -> list[str]:
        """Model names the API serves: "base" first, then every tuned adapter."""
        data = self.request("GET", "/v1/models").get("data", [])
        names = [str(card.get("id")) for card in data if card.get("id")]
        return sorted(names, key=lambda n: (n != "base", n))

    @staticmethod
    def ask_body(question: str, *, use_rag: bool = True, top_k: int | None = None,
                 model: str | None = None, max_new_tokens: int | None = None,
                 temperature: float = 0.0, stream: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"question": question, "use_rag": use_rag,
                                "temperature": temperature, "stream": stream}
        for key, value in (("top_k", top_k), ("model", model), ("max_new_tokens", max_new_tokens)):
            if value is not None:
                body[key] = value
        return body

    def ask(self, question: str, **options: Any) -> dict[str, Any]:
        """`POST /ask`: {id, answer, reasoning, sources, model, usage, timings, ...}."""
        return self.request("POST", "/ask", json=self.ask_body(question, **options))

    def ask_stream(self, question: str, **options: Any) -> Iterator[StreamEvent]:
        """`POST /ask` with stream=true: sources, reasoning/answer deltas, then done.

        An `error` event from the server (after the stream began) is raised as ApiError.
        """
        body = self.ask_body(question, stream=True, **options)
        try:
            with self._http.stream("POST", "/ask", json=body, headers=self._auth()) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(error_message(response), response.status_code)
                for event in parse_sse(response.iter_lines()):
                    if event.kind == "error":
                        err = event.data.get("error", {})
                        raise ApiError(str(err.get("message") or err or "the answer failed"))
                    yield event
        except httpx.HTTPError as err:
            raise self._unreachable(err) from None

    # ------------------------------------------------------------------ feedback
    def feedback(self, *, answer_id: str | None = None, rating: str | None = None,
                 chosen_id: str | None = None, rejected_id: str | None = None,
                 question: str | None = None, comment: str = "") -> dict[str, Any]:
        """`POST /feedback`: rate an answer (like/dislike/none) or prefer one of two answers."""
        body = {k: v for k, v in (("answer_id", answer_id), ("rating", rating),
                                  ("chosen_id", chosen_id), ("rejected_id", rejected_id),
                                  ("question", question)) if v is not None}
        if comment:
            body["comment"] = comment
        return self.request("POST", "/feedback", json=body)

    def feedback_stats(self) -> dict[str, Any]:
        """`GET /feedback/stats`: counts of answers, likes, dislikes and choices."""
        return self.request("GET", "/feedback/stats")

    # ------------------------------------------------------------------ documents
    def documents(self) -> dict[str, Any]:
        """`GET /documents`: {documents: [...], stats: {...}}."""
        return self.request("GET", "/documents")

    def upload(self, files: Sequence[Path]) -> dict[str, Any]:
        """`POST /documents`: upload files (multipart) and ingest them; the ingest report."""
        handles = []
        try:
            parts = []
            for path in files:
                handle = open(path, "rb")  # noqa: SIM115 - closed below
                handles.append(handle)
                parts.append(("files", (Path(path).name, handle, "application/octet-stream")))
            return self.request("POST", "/documents", files=parts, timeout=INGEST_TIMEOUT)
        finally:
            for handle in handles:
                handle.close()

    def ingest_path(self, path: str, keep_missing: bool = False) -> dict[str, Any]:
        """`POST /documents/ingest`: ingest a file or folder that is on the API's machine."""
        return self.request("POST", "/documents/ingest", timeout=INGEST_TIMEOUT,
                            json={"path": path, "keep_missing": keep_missing})

    def remove_document(self, doc_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/documents/{doc_id}")


def parse_sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Server-sent events from text lines (`event:` + `data:` lines, blank line ends one)."""
    kind, data_lines = "", []
    for line in lines:
        if line == "":
            if data_lines:
                yield _event(kind, "\n".join(data_lines))
            kind, data_lines = "", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(" ") else value)
    if data_lines:
        yield _event(kind, "\n".join(data_lines))


def _event(kind: str, payload: str) -> StreamEvent:
    try:
        data = json.loads(payload)
    except ValueError:
        data = {"text": payload}
    if not isinstance(data, dict):
        data = {"value": data}
    return StreamEvent(kind or str(data.get("type", "message")), data)
