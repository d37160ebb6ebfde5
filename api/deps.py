"""FastAPI dependencies in one place: the loaded services, the API key check and the request
limits that follow the settings."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.assistant import Assistant
from api.config import ApiConfig
from serving.generation import check_model
from ragtune.errors import RagtuneError
from ragtune.types import Generator


class Unauthorized(RagtuneError):
    """Missing or wrong API key."""

    http_status = 401


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


_bearer = HTTPBearer(auto_error=False, description="The API key, when the server has one.")


def require_api_key(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(_bearer)] = None) -> None:
    """Reject the request unless it carries `Authorization: Bearer <api_key>` (when one is set)."""
    services = get_services(request)
    expected = services.api.api_key
    if expected is None:
        return
    if credentials is None:
        raise Unauthorized("missing API key: send the header `Authorization: Bearer <key>`")
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("wrong API key")


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
