"""The FastAPI application: `create_app(settings)` wires settings, generator, retriever and
routes; models and the index load in the lifespan unless they are injected (tests, the UI).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.assistant import Assistant
from api.config import ApiConfig
from serving.config import AssistantConfig, EngineConfig
from api.deps import Services
from api.errors import error_payload, install_error_handlers
from api.routes import ask, documents, feedback, health, openai
from ragtune.errors import RagtuneError
from ragtune.settings import Settings, apply_torch_threads, load_settings
from ragtune.types import Generator, Retriever
from serving.loading import load_generator, load_reranker, load_retriever

log = logging.getLogger(__name__)

DESCRIPTION = """Answers questions from your documents (`/ask`, with [n] citations and their
sources), an OpenAI-compatible chat API over the base model and every tuned adapter
(`/v1/chat/completions`, `/v1/models`) and the plain `/generate?prompt=`. When the server has
API keys, send `Authorization: Bearer <key>` (use *Authorize* here): an `ask` key may ask,
chat, list models and give feedback on answers; an `admin` key may also manage documents and
read the feedback statistics. `/health` and these docs need none."""

# (schema component, property) -> the ApiConfig limit that bounds it in the OpenAPI document.
_LIMITS = {("AskRequest", "question"): ("maxLength", "max_question_chars"),
           ("AskRequest", "top_k"): ("maximum", "max_top_k"),
           ("AskRequest", "max_new_tokens"): ("maximum", "max_new_tokens_limit"),
           ("ChatCompletionRequest", "top_k"): ("maximum", "max_top_k"),
           ("ChatCompletionRequest", "max_tokens"): ("maximum", "max_new_tokens_limit"),
           ("ChatCompletionRequest", "max_completion_tokens"): ("maximum", "max_new_tokens_limit"),
           ("RagtuneOptions", "top_k"): ("maximum", "max_top_k"),
           ("FeedbackRequest", "comment"): ("maxLength", "max_question_chars")}
_QUERY_LIMITS = {("/generate", "prompt"): ("maxLength", "max_question_chars"),
                 ("/generate", "max_new_tokens"): ("maximum", "max_new_tokens_limit")}


def _bound(schema: dict, keyword: str, value: int) -> None:
    """Put `keyword: value` on a property schema (on its non-null branch when it is optional)."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    for target in branches or [schema]:
        target[keyword] = value


def install_limits_in_openapi(app: FastAPI, api: ApiConfig) -> None:
    """The OpenAPI document carries the configured limits (question length, max_new_tokens,
    top_k) as maxLength/maximum, so generated clients and fuzzers know them; the routes check
    the same limits (api.deps) because they follow the settings, not static Field bounds."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.get("components", {}).get("schemas", {})
        for (model, prop), (keyword, limit) in _LIMITS.items():
            target = components.get(model, {}).get("properties", {}).get(prop)
            if target is not None:
                _bound(target, keyword, getattr(api, limit))
        for (path, name), (keyword, limit) in _QUERY_LIMITS.items():
            for param in schema["paths"].get(path, {}).get("get", {}).get("parameters", []):
                if param["name"] == name:
                    _bound(param["schema"], keyword, getattr(api, limit))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class BodyLimit:
    """Answer 413 when a request body (declared or streamed) exceeds `max_bytes`
    (or the larger limit given for a path in `per_path`, e.g. document uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 per_path: dict[str, int] | None = None) -> None:
        self.app, self.default_max, self.per_path = app, max_bytes, per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope.get("path", ""), self.default_max)
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = f"the request body is larger than {max_bytes} bytes (max_body_bytes)"
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            status = 413 if declared.isdigit() else 400
            message = too_big if status == 413 else "invalid Content-Length header"
            await _send_json(send, status, error_payload(HTTPException(status), status, message))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise HTTPException(413, too_big)
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, payload: dict) -> None:
    import json

    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None, *, generator: Generator | None = None,
               retriever: Retriever | None = None, api_config: ApiConfig | None = None,
               assistant_config: AssistantConfig | None = None,
               engine_config: EngineConfig | None = None,
               extra_adapters: dict[str, Path] | None = None) -> FastAPI:
    """Build the app. Without `generator`/`retriever`, they are loaded from the settings at
    start-up (and a generator loaded here is closed at shutdown)."""
    settings = settings or load_settings()
    api = api_config or ApiConfig.from_settings(settings)
    assistant_cfg = assistant_config or AssistantConfig.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gen = generator or await anyio.to_thread.run_sync(
            load_generator, settings, engine_config, extra_adapters)
        ret, reason = (retriever, "") if retriever is not None else \
            await anyio.to_thread.run_sync(load_retriever, settings)
        reranker = await anyio.to_thread.run_sync(load_reranker, settings)
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.max_queue + 64)
        assistant = Assistant(gen, ret, assistant_cfg, no_index_reason=reason or
                              "no index is loaded; run `ingest DOCS` first", reranker=reranker)
        app.state.services = Services(assistant, api, settings.generator_backend, ret is not None)
        try:
            yield
        finally:
            app.state.services = None
            if generator is None:
                gen.close()

    app = FastAPI(title="ragtune", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.services = None
    app.state.settings = settings
    install_error_handlers(app)
    for router in (health.router, ask.router, openai.router, documents.router):
        app.include_router(router)
    feedback.install(app, settings)  # the /feedback routes + persisting every answer
    install_limits_in_openapi(app, api)
    # Uploads are capped per file by the documents route (max_file_mb); allow a few files.
    upload_limit = max(api.max_body_bytes, int(settings.max_file_mb * 2**20 * 4))
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes,
                       per_path={"/documents": upload_limit})
    if api.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=api.cors_origins,
                           allow_credentials=api.cors_credentials,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type"])
    return app
