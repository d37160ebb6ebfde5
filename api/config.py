"""Config of the HTTP API: auth, CORS, request limits (built from `Settings`, validated in
`__post_init__`, naming the bad field and value)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragtune.errors import ConfigError
from ragtune.settings import ROLES, Role, Settings
from serving.config import MODEL_NAME, require_positive


@dataclass
class ApiConfig:
    """HTTP-facing behaviour: auth, CORS, request limits, defaults for clients that omit them."""

    api_key: str | None = field(default=None, repr=False)  # a single admin key
    keys: dict[str, Role] = field(default_factory=dict, repr=False)  # key -> role
    cors_origins: list[str] = field(default_factory=list)
    max_question_chars: int = 4000
    max_new_tokens_limit: int = 2048
    max_top_k: int = 20
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 120.0
    default_model: str = "base"
    chat_rag_default: bool = False

    def __post_init__(self) -> None:
        for name in ("max_question_chars", "max_new_tokens_limit", "max_top_k", "max_body_bytes",
                     "request_timeout_s"):
            require_positive(name, getattr(self, name))
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key", "<empty>", "set a non-empty key or leave it unset")
        for key, role in self.keys.items():
            if not key.strip():
                raise ConfigError("api_keys", "<empty>", "every key must be non-empty")
            if role not in ROLES:
                raise ConfigError("api_keys", role, f"a role is one of {', '.join(ROLES)}")
        if not MODEL_NAME.match(self.default_model):
            raise ConfigError("model", self.default_model, "not a valid model name")

    @property
    def roles(self) -> list[tuple[bytes, Role]]:
        """Every accepted key (as bytes, for constant-time comparison) with its role; the
        single `api_key` is an admin key."""
        pairs = [(k.encode(), r) for k, r in self.keys.items()]
        if self.api_key is not None:
            pairs.append((self.api_key.encode(), "admin"))
        return pairs

    @property
    def auth_enabled(self) -> bool:
        return self.api_key is not None or bool(self.keys)

    @property
    def cors_credentials(self) -> bool:
        """Credentials are allowed only with an explicit origin list, never with `*`."""
        return bool(self.cors_origins) and "*" not in self.cors_origins

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ApiConfig:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        keys = {k.key.get_secret_value(): k.role for k in settings.api_keys}
        values = dict(api_key=key, keys=keys, cors_origins=list(settings.cors_origins),
                      max_question_chars=settings.max_question_chars,
                      max_new_tokens_limit=settings.max_new_tokens_limit,
                      max_top_k=settings.max_top_k, max_body_bytes=settings.max_body_bytes,
                      request_timeout_s=settings.request_timeout_s)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
