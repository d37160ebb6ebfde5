"""`POST /feedback` (like/dislike an answer, or "A is better than B") and `GET /feedback/stats`.

Wiring: `install(app, settings)` opens the feedback store, includes the router and subscribes
the store to the Assistant's answer history at start-up, so every answer is persisted when it
is produced (feedback then works after a restart). An answer still only in the in-memory
history (e.g. produced before the store was attached) is persisted at feedback time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import NotReady, Services, ServicesDep, check_text, require_admin, require_ask
from api.schemas import AUTH_ERRORS, error_responses
from feedback.store import FeedbackStore, StoredAnswer
from ragtune.errors import NotFoundError
from ragtune.settings import Settings

router = APIRouter(tags=["feedback"])


class FeedbackRequest(BaseModel):
    """Either a rating `{answer_id, rating, comment?}` or a choice `{chosen_id, rejected_id,
    question?, comment?}` between two answers to the same question."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"answer_id": "3f6c…", "rating": "like", "comment": "quotes the right passage"},
        {"question": "How many days of leave?", "chosen_id": "3f6c…", "rejected_id": "9a01…"}]})

    answer_id: str | None = Field(None, min_length=1, description="The answer rated.")
    rating: Literal["like", "dislike", "none"] | None = Field(
        None, description='"like", "dislike", or "none" to withdraw a rating.')
    chosen_id: str | None = Field(None, min_length=1, description="The better answer's id.")
    rejected_id: str | None = Field(None, min_length=1, description="The worse answer's id.")
    question: str | None = Field(None, description="Optional check: the question both answer.")
    comment: str = Field("", description="Free text kept with the feedback.")

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRequest:
        rating = self.answer_id is not None or self.rating is not None
        choice = self.chosen_id is not None or self.rejected_id is not None
        if rating == choice:
            raise ValueError("send either {answer_id, rating} or {chosen_id, rejected_id}")
        if rating and (self.answer_id is None or self.rating is None):
            raise ValueError("a rating needs both `answer_id` and `rating`")
        if choice and (self.chosen_id is None or self.rejected_id is None):
            raise ValueError("a choice needs both `chosen_id` and `rejected_id`")
        return self

    @property
    def kind(self) -> Literal["rating", "comparison"]:
        return "rating" if self.answer_id is not None else "comparison"


class FeedbackResponse(BaseModel):
    recorded: Literal["rating", "comparison"]
    question: str
    answer_id: str | None = None
    rating: str | None = None
    model: str | None = None
    comparison_id: int | None = None
    chosen_id: str | None = None
    rejected_id: str | None = None


def get_feedback_store(request: Request, services: ServicesDep) -> FeedbackStore:
    """The app's feedback store (made from `app.state.settings` if none was installed)."""
    store = getattr(request.app.state, "feedback", None)
    if store is None:
        settings = getattr(request.app.state, "settings", None)
        if settings is None:
            raise NotReady("feedback is not set up on this server (no feedback store)")
        store = request.app.state.feedback = FeedbackStore.from_settings(settings)
    services.assistant.store.subscribe(store.persist)
    return store


def _known(store: FeedbackStore, services: Services, answer_id: str) -> StoredAnswer:
    """The stored answer; one still in the in-memory history is persisted first."""
    if not store.has_answer(answer_id):
        try:
            answer = services.assistant.store.get(answer_id)
        except NotFoundError as err:
            raise NotFoundError(f"unknown answer id {answer_id!r}: use the `id` that /ask or "
                                "/v1/chat/completions returned") from err
        store.record_answer(answer, system=services.assistant.system)
    return store.get_answer(answer_id)


@router.post("/feedback", response_model=FeedbackResponse, response_model_exclude_none=True,
             dependencies=[Depends(require_ask)],
             responses=error_responses(*AUTH_ERRORS, 404, 413, 422, 503))
def post_feedback(body: FeedbackRequest, services: ServicesDep,
                  store: FeedbackStore = Depends(get_feedback_store)) -> dict[str, Any]:
    """Record a like/dislike on an answer, or which of two answers to a question is better."""
    if body.comment:
        check_text("comment", body.comment, services.api)
    if body.kind == "rating":
        answer_id = body.answer_id or ""
        answer = _known(store, services, answer_id)
        if body.rating == "none":
            store.unrate(answer_id)
        else:
            store.rate(answer_id, body.rating or "like", body.comment)
        return {"recorded": "rating", "question": answer.question, "answer_id": answer_id,
                "rating": body.rating, "model": answer.model}
    chosen_id, rejected_id = body.chosen_id or "", body.rejected_id or ""
    chosen = _known(store, services, chosen_id)
    _known(store, services, rejected_id)
    cid = store.compare(chosen_id, rejected_id, body.question, body.comment)
    return {"recorded": "comparison", "question": chosen.question, "comparison_id": cid,
            "chosen_id": chosen_id, "rejected_id": rejected_id}


@router.get("/feedback/stats", dependencies=[Depends(require_admin)],
            responses=error_responses(*AUTH_ERRORS, 503))
def feedback_stats(store: FeedbackStore = Depends(get_feedback_store)) -> dict[str, Any]:
    """Counts of stored answers, likes, dislikes and choices, per model and base model."""
    stats = store.stats()
    stats.pop("db", None)
    return stats


def install(app: FastAPI, settings: Settings, store: FeedbackStore | None = None) -> FeedbackStore:
    """Add feedback to an app from `create_app`: the store, the routes, and persisting every
    answer as it is produced (subscribed once the app's lifespan has built the Assistant)."""
    existing = getattr(app.state, "feedback", None)
    if existing is not None and store is None:
        return existing  # create_app installs it already
    store = store or FeedbackStore.from_settings(settings)
    app.state.feedback = store
    app.include_router(router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(the_app: FastAPI) -> AsyncIterator[Any]:
        async with inner(the_app) as state:
            services = getattr(the_app.state, "services", None)
            if services is not None:
                services.assistant.store.subscribe(store.persist)
            yield state

    app.router.lifespan_context = lifespan
    return store
