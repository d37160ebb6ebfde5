"""The UI's login: a visitor signs in with their own API key, checked against the API, and
every call the UI makes for them carries that key (never a key of the UI's own).

Gradio's `auth=` callable takes (username, password): the password is the API key, the
username a name the visitor picks. The API says the key's role (`GET /auth/whoami`). Gradio
remembers only the username of a session, so a name is bound to the key that signed in with
it: another key cannot take a name that a still-valid key holds (that would hand the first
visitor's session the second key's role). Handlers find the visitor through Gradio's request
context; Chat and Compare need `ask`, Documents, Fine-tune and Eval need `admin`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ragtune.errors import ConfigError, RagtuneError
from ragtune.settings import is_loopback
from ui.client import ApiClient, ApiError

log = logging.getLogger(__name__)
ADMIN_TABS = ("documents", "finetune", "eval")
LOGIN_MESSAGE = ("Sign in with your ragtune API key: any name as the user name, the key as "
                 "the password. An `ask` key gets Chat and Compare; an `admin` key everything.")


class NotAllowed(RagtuneError):
    """The visitor's key lacks the role a tab needs."""

    http_status = 403


def current_username() -> str | None:
    """The signed-in username of the Gradio request being handled (None outside one)."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return getattr(request, "username", None) if request is not None else None


class Visitors:
    """Signed-in visitors of one UI: name -> (key, role), checked against the API."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self._bound: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def _role_of(self, key: str) -> str | None:
        """The API's role for `key` (None when the API refuses it)."""
        probe = ApiClient(self.api_url, key)
        try:
            return str(probe.whoami().get("role"))
        except ApiError as err:
            if err.status not in (401, 403):
                log.warning("login: the API at %s could not check a key: %s", self.api_url, err)
            return None
        finally:
            probe.close()

    def login(self, username: str, password: str) -> bool:
        """Gradio's `auth=` callable: True when the API accepts the key and the name is free
        (or bound to this key, or to a key the API no longer accepts)."""
        name, key = (username or "").strip(), password or ""
        if not name or not key:
            return False
        role = self._role_of(key)
        if role is None:
            return False
        with self._lock:
            held = self._bound.get(name)
        if held is not None and held[0] != key and self._role_of(held[0]) is not None:
            log.warning("login refused: the name %r is signed in with another key", name)
            return False
        with self._lock:
            self._bound[name] = (key, role)
        log.info("login: %r signed in with a key of role %s", name, role)
        return True

    def key(self) -> str | None:
        """The API key of the visitor whose request is being handled (None: not signed in)."""
        held = self._bound.get(current_username() or "")
        return held[0] if held else None

    def role(self) -> str | None:
        held = self._bound.get(current_username() or "")
        return held[1] if held else None

    def require_admin(self, what: str) -> None:
        """Raise NotAllowed unless the current visitor signed in with an admin key."""
        if self.role() != "admin":
            raise NotAllowed(f"{what} needs an `admin` API key; sign in with one "
                             "(this key has the role `ask`)")


def check_exposure(host: str, share: bool, api_has_keys: bool) -> None:
    """Refuse to publish a UI that has no login: a non-loopback host or a share link needs an
    API with keys (each visitor then signs in with their own)."""
    if api_has_keys:
        return
    if share:
        raise ConfigError("share", True, "a public share link needs an API with keys "
                          "(set RAGTUNE_API_KEYS, e.g. 'KEY1:ask,KEY2:admin'); without keys "
                          "anyone with the link could ingest, train and read feedback")
    if not is_loopback(host):
        raise ConfigError("host", host, "the UI listens beyond loopback only when the API has "
                          "keys (set RAGTUNE_API_KEYS, e.g. 'KEY1:ask,KEY2:admin'), so that "
                          "visitors sign in; or use --host 127.0.0.1 behind your own proxy login")


def api_has_keys(client: ApiClient) -> bool:
    """Whether the API asks for keys (its /health says `auth`)."""
    return bool(client.health().get("auth"))


def tab_visibility(visitors: Visitors | None) -> dict[str, Any]:
    """{tab id: visible} for the visitor of the current request (all tabs without login)."""
    admin = visitors is None or visitors.role() == "admin"
    return {tab: admin for tab in ADMIN_TABS}
