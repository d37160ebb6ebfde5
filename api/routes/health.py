"""`GET /health`: liveness and what is loaded (no auth, for load balancers and the UI)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from api.deps import ServicesDep, public, require_ask
from api.schemas import AUTH_ERRORS, error_responses

router = APIRouter(tags=["service"])


@router.get("/health", dependencies=[Depends(public)], responses=error_responses(503))
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
            "auth": services.api.auth_enabled}
    store = getattr(request.app.state, "feedback", None)
    if store is not None:
        body["feedback_store"] = store.health()
    return body


@router.get("/auth/whoami", responses=error_responses(*AUTH_ERRORS, 503))
def whoami(services: ServicesDep,
           role: Annotated[str | None, Depends(require_ask)]) -> dict[str, Any]:
    """The role of the key sent (`ask` or `admin`), for clients such as the UI's login; a
    server without keys answers `admin` with `auth: false`."""
    return {"role": role or "admin", "auth": services.api.auth_enabled}
