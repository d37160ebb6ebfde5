"""`GET /health`: liveness and what is loaded (no auth, for load balancers and the UI)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.deps import ServicesDep

router = APIRouter(tags=["service"])


@router.get("/health")
def health(request: Request, services: ServicesDep) -> dict[str, Any]:
    """Report that the service is up, with its backend, models and whether an index is loaded.

    `feedback_store` (when feedback is installed) says whether served answers are being saved:
    `{"ok", "failures", "last_error"}`; feedback on an answer that failed to save is refused.
    """
    engine = services.generator
    body = {"status": "ok", "backend": services.backend, "models": engine.models(),
            "default_model": services.api.default_model, "index": services.index_loaded,
            "queued": getattr(engine, "queued", 0),
            "finished": dict(getattr(engine, "finished", {})),
            "auth": services.api.api_key is not None}
    store = getattr(request.app.state, "feedback", None)
    if store is not None:
        body["feedback_store"] = store.health()
    return body
