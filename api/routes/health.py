"""`GET /health`: liveness and what is loaded (no auth, for load balancers and the UI)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from api.deps import ServicesDep, public
from api.schemas import error_responses

router = APIRouter(tags=["service"], dependencies=[Depends(public)])


@router.get("/health", responses=error_responses(503))
def health(services: ServicesDep) -> dict[str, Any]:
    """Report that the service is up, with its backend, models and whether an index is loaded."""
    engine = services.generator
    return {"status": "ok", "backend": services.backend, "models": engine.models(),
            "default_model": services.api.default_model, "index": services.index_loaded,
            "queued": getattr(engine, "queued", 0),
            "finished": dict(getattr(engine, "finished", {})),
            "auth": services.api.auth_enabled}
