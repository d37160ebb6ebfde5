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


class GroundingOut(BaseModel):
    """Whether the answer is supported by a passage it cites (see docs/serving.md)."""

    supported: bool = Field(description="The claim's facts and content are in a cited passage.")
    checked: bool = Field(description="False when there was nothing to check (no retrieval, "
                                      "or the gate refused before generating).")
    passage: int | None = Field(None, description="The supporting (or checked) passage n.")
    sentence: str | None = Field(None, description="The supporting sentence of that passage.")
    score: float = Field(0.0, description="Share of the claim's content found in the passage.")
    relevance: float = Field(0.0, description="That sentence's question coverage relative to "
                                              "the best retrieved sentence.")
    reason: str | None = Field(None, description="Why the answer is not supported.")
    cited: list[int] = Field(default_factory=list)
    answerability: float | None = Field(None, description="The refusal gate's score.")


class AskResponse(BaseModel):
    id: str
    answer: str = Field(description="The answer the user should see (generated, extracted or "
                                    "the refusal; see answer_kind).")
    reasoning: str
    sources: list[SourceOut]
    citations: list[int]
    model: str
    usage: dict[str, int]
    timings: dict[str, float]
    finish_reason: str
    refused: bool
    answer_kind: Literal["generated", "extracted", "refused"] = Field(
        description="generated: the model's answer; extracted: the service quotes the passage "
                    "sentence that best answers instead of an unsupported answer; refused: "
                    "\"I don't know\".")
    grounding: GroundingOut
    generated: str = Field("", description="The model's own text when `answer` replaced it.")


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


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str = Field(description="What went wrong, for people (names the field or role).")
    type: str = Field(description='OpenAI-style kind, e.g. "authentication_error".')
    code: str = Field(description="The error class, or the HTTP status as text.")
    details: list[dict[str, Any]] | None = Field(None, description="Validation problems (422).")


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"message", "type", "code"}}` (the OpenAI shape)."""

    error: ErrorDetail


_ERROR_TEXT = {400: "Bad request (e.g. generation failed on these parameters)",
               401: "Missing or wrong API key", 403: "The key lacks the role, or the path is "
               "outside the allowed folders", 404: "Unknown model, answer or document",
               409: "Conflict (e.g. an upload with the name of a different file)",
               413: "Body or text beyond the configured limit",
               422: "Invalid request (fields and limits)",
               503: "Loading, or the queue is full (see Retry-After)",
               504: "The answer took longer than request_timeout_s"}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route returns, each with `ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _ERROR_TEXT[code]} for code in codes}


AUTH_ERRORS = (401, 403)
GENERATION_ERRORS = (400, 401, 403, 404, 413, 422, 503, 504)
