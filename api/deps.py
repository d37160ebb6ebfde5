"""FastAPI dependencies in one place: the loaded services, the API key check and the request
limits that follow the settings."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.assistant import Assistant, Params
from api.config import ApiConfig
from serving.generation import check_model
from ragtune.errors import RagtuneError
from ragtune.settings import Role
from ragtune.types import Generator


class Unauthorized(RagtuneError):
    """Missing or wrong API key."""

    http_status = 401


class Forbidden(RagtuneError):
    """A valid API key without the role a route needs, or a path outside the allowed folders."""

    http_status = 403


class LimitError(RagtuneError):
    """A request field is empty or beyond a configured limit."""

    http_status = 422


class PayloadTooLarge(RagtuneError):
    """A request body or text field is larger than the configured limit."""

    http_status = 413


class NotReady(RagtuneError):
    """The service is still loading its models."""

    http_status = 503


@dataclass
class Services:
    """Everything the routes use, built once in the app's lifespan."""

    assistant: Assistant
    api: ApiConfig
    backend: str = "transformers"
    index_loaded: bool = False
    started: float = field(default_factory=time.time)

    @property
    def generator(self) -> Generator:
        return self.assistant.generator

    def model(self, name: str | None) -> str:
        """The requested model, or the default one; unknown names are a 404 listing the known."""
        chosen = name or self.api.default_model
        check_model(self.generator, chosen)
        return chosen


def get_services(request: Request) -> Services:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("the service is still loading its models; retry in a few seconds")
    return services


_bearer = HTTPBearer(auto_error=False, description="An API key (role `ask` or `admin`), when "
                     "the server has keys.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def role_of(api: ApiConfig, token: str) -> Role | None:
    """The role of `token`, compared in constant time against every key (no early exit, so
    the time taken says nothing about which key, or how much of one, matched)."""
    given, found = token.encode(), None
    for key, role in api.roles:
        if secrets.compare_digest(given, key) and found != "admin":
            found = role
    return found


class RequireRole:
    """The access a route needs, declared as its dependency: `public` (no key), `ask` or
    `admin` (an admin key may do everything an ask key may). With no keys configured, every
    route is open (`ragtune serve` warns when that server listens beyond loopback)."""

    def __init__(self, role: Role | None) -> None:
        self.role = role

    def __repr__(self) -> str:
        return f"RequireRole({self.role or 'public'})"

    def __call__(self, request: Request, credentials: Credentials = None) -> Role | None:
        if self.role is None:
            return None
        api = get_services(request).api
        if not api.auth_enabled:
            return None
        if credentials is None:
            raise Unauthorized("missing API key: send the header `Authorization: Bearer <key>` "
                               f"with a key of role `{self.role}`")
        role = role_of(api, credentials.credentials)
        if role is None:
            raise Unauthorized("wrong API key")
        if role != "admin" and role != self.role:
            raise Forbidden(f"this key has the role `{role}`; {request.method} "
                            f"{request.url.path} needs the role `{self.role}`")
        return role


public = RequireRole(None)
require_ask = RequireRole("ask")
require_admin = RequireRole("admin")
require_api_key = require_admin  # the old single-key check: full access


ServicesDep = Annotated[Services, Depends(get_services)]


def check_text(field_name: str, text: str, api: ApiConfig) -> None:
    """A question-like text: not blank, and within `max_question_chars`."""
    if not text.strip():
        raise LimitError(f"`{field_name}` is empty")
    if len(text) > api.max_question_chars:
        raise PayloadTooLarge(f"`{field_name}` has {len(text)} characters; the limit is "
                              f"{api.max_question_chars} (max_question_chars)")


def check_max_new_tokens(field_name: str, value: int | None, api: ApiConfig) -> None:
    if value is not None and value > api.max_new_tokens_limit:
        raise LimitError(f"`{field_name}` is {value}; the limit is {api.max_new_tokens_limit} "
                         "(max_new_tokens_limit)")


def check_top_k(value: int | None, api: ApiConfig) -> None:
    if value is not None and value > api.max_top_k:
        raise LimitError(f"`top_k` is {value}; the limit is {api.max_top_k} (max_top_k)")


GREEDY_BELOW = 1e-5


def params_for(model: str, max_new_tokens: int | None, temperature: float | None,
               top_p: float = 1.0, stop: list[str] | None = None,
               seed: int | None = None) -> Params:
    """The generation parameters of a request (`/ask`, `/generate`, `/v1/chat/completions`).

    This is where a request's temperature becomes the GenerationRequest's: a temperature
    below `GREEDY_BELOW` (1e-5) is greedy decoding (0.0). Sampling divides the logits by
    the temperature, so a tiny positive one (1e-300) overflows them to inf and the sampler
    fails with "probability tensor contains inf/nan"; at such temperatures sampling is
    greedy anyway."""
    temp = float(temperature or 0.0)
    return Params(model, max_new_tokens, 0.0 if temp < GREEDY_BELOW else temp, top_p,
                  list(stop or []), seed)


def route_access(app: Any) -> list[tuple[str, str, list[Role | None]]]:
    """(method, path, declared roles) of every API route of `app`, routers included (FastAPI
    >= 0.16x keeps included routers as one entry; older ones flatten them into APIRoutes)."""
    from fastapi.routing import APIRoute

    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes holds the APIRoutes themselves
        contexts = [r for r in app.routes if isinstance(r, APIRoute)]
    else:
        contexts = [c for c in iter_route_contexts(app.routes)
                    if isinstance(c.original_route, APIRoute)]
    return [(method, c.path, [d.call.role for d in c.dependant.dependencies
                              if isinstance(d.call, RequireRole)])
            for c in contexts for method in sorted(c.methods)]
