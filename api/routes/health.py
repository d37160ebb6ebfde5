"""`GET /health`: liveness and what is loaded (no auth, for load balancers and the UI)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from api.deps import ServicesDep, public, require_ask
from api.schemas import AUTH_ERRORS, error_responses

router = APIRouter(tags=["service"])


@router.get("/health", dependencies=[Depends(public)], responses=error_responses(503))
def health(services: ServicesDep) -> dict[str, Any]:
    """Report that the service is up, with its backend, models and whether an index is loaded."""
    engine = services.generator
    return {"status": "ok", "backend": services.backend, "models": engine.models(),
            "default_model": services.api.default_model, "index": services.index_loaded,
            "queued": getattr(engine, "queued", 0),
            "finished": dict(getattr(engine, "finished", {})),
            "auth": services.api.auth_enabled}


@router.get("/auth/whoami", responses=error_responses(*AUTH_ERRORS, 503))
def whoami(services: ServicesDep,
           role: Annotated[str | None, Depends(require_ask)]) -> dict[str, Any]:
    """The role of the key sent (`ask` or `admin`), for clients such as the UI's login; a
    server without keys answers `admin` with `auth: false`."""
    return {"role": role or "admin", "auth": services.api.auth_enabled}
