"""Request and response bodies of the HTTP API (pydantic), shown in `/docs`.

Static bounds live here; the configurable limits (question length, max_new_tokens, top_k)
are checked in `api.limits` so that they follow the settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AskRequest(BaseModel):
    """`POST /ask`."""

    model_config = ConfigDict(extra="ignore")

    question: str = Field(min_length=1, description="The question to answer.")
    use_rag: bool = Field(True, description="Retrieve passages and answer from them.")
    top_k: int | None = Field(None, ge=1, description="Passages to retrieve (default: settings).")
    model: str | None = Field(None, description='"base" or a tuned adapter (see /v1/models).')
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    stream: bool = Field(False, description="Answer as server-sent events.")


class SourceOut(BaseModel):
    n: int = Field(description="The [n] marker that cites this passage.")
    source: str
    chunk_index: int
    section: str
    score: float
    text: str
    page: int | None = Field(None, description="1-based PDF page (or image frame) the passage starts on.")
    row_start: int | None = Field(None, description="First CSV/JSONL row of the passage (a CSV header is row 1).")
    row_end: int | None = Field(None, description="Last CSV/JSONL row of the passage.")
    ocr: bool = Field(False, description="The passage's text was recognised by OCR.")
    citation: str = Field("", description='Where it came from, e.g. "manual.pdf, p. 12, § 3.2".')


class AskResponse(BaseModel):
    id: str
    answer: str
    reasoning: str
    sources: list[SourceOut]
    citations: list[int]
    model: str
    usage: dict[str, int]
    timings: dict[str, float]
    finish_reason: str
    refused: bool


class GenerateResponse(BaseModel):
    generated_text: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = "text"
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text (text parts of a multi-part content joined)."""
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class RagtuneOptions(BaseModel):
    """The `ragtune` extension object of a chat completion request."""

    model_config = ConfigDict(extra="ignore")

    use_rag: bool | None = None
    top_k: int | None = Field(None, ge=1)


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions` (OpenAI-compatible; unknown fields are ignored).

    Retrieval is an extension: `"ragtune": {"use_rag": true, "top_k": 4}` (or top-level
    `use_rag` / `top_k`, which is what openai-python's `extra_body` produces).
    """

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only n=1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    use_rag: bool | None = None
    top_k: int | None = Field(None, ge=1)
    ragtune: RagtuneOptions | None = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragtune"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    error: dict[str, Any]
