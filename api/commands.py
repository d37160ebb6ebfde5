"""The `ragtune serve` command (kept light at import time: heavy imports happen inside)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from ragtune.errors import ModelNotFoundError, RagtuneError


class _QuietUpgrade(logging.Filter):
    """Drop uvicorn's warning for the h2c upgrade offer that every Java HttpClient sends."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Unsupported upgrade request" not in record.getMessage() and \
            "No supported WebSocket library" not in record.getMessage()


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "info") -> Any:
    """uvicorn settings for ragtune: the h11 parser, which keeps the body of a request that
    offers `Upgrade: h2c` (Java's HttpClient does; httptools drops it, uvicorn#2722)."""
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_QuietUpgrade())
    return uvicorn.Config(app, host=host, port=port, http="h11", ws="none",
                          log_level=log_level, timeout_graceful_shutdown=5,
                          timeout_keep_alive=30)


def _pick_model(model: str | None, runs_dir: Path) -> tuple[str, str | None, dict[str, Path]]:
    """`(default_model, generator_override, extra_adapters)` for the `--model` value."""
    from serving.adapters import adapter_from_path, discover_adapters

    if model is None or model == "base":
        return "base", None, {}
    runs = discover_adapters(runs_dir)
    if model in runs:
        return model, None, {}
    adapter = adapter_from_path(Path(model))
    if adapter is not None:
        name, path = adapter
        return name, None, {name: path}
    if Path(model).expanduser().is_dir() or model.startswith("embedded:") or "/" in model:
        return "base", model, {}
    known = ", ".join(sorted(runs)) or "none yet"
    raise ModelNotFoundError(f"--model {model!r} is not 'base', a run with an adapter in "
                             f"{runs_dir} (runs: {known}), nor a model directory or HF id")


def serve(model: str | None = None, host: str | None = None, port: int | None = None,
          workspace: Path | None = None, api_key: str | None = None,
          chat_rag: bool = False, log_level: str = "info") -> int:
    """Serve the assistant over HTTP and print its URL.

    Routes: POST /ask (answers with numbered citations and their sources),
    POST /v1/chat/completions and GET /v1/models (OpenAI-compatible; every tuned adapter is a
    model), GET /generate?prompt=, GET /health, and the interactive docs at /docs.

    Args:
        model: "base" (default); a run name whose adapter answers requests that name no model;
            a run or adapter directory; or a model directory / Hugging Face id to serve instead
            of the configured generator.
        host: interface to listen on (default: settings `host`, 127.0.0.1).
        port: port to listen on (default: settings `port`, 8000; 0 picks a free one).
        workspace: workspace directory holding the index and the runs.
        api_key: an admin key: require `Authorization: Bearer <key>` on every route but
            /health and the docs (keys with roles: settings `api_keys`, RAGTUNE_API_KEYS).
        chat_rag: retrieve passages for /v1/chat/completions by default (for OpenAI clients
            that cannot send the `ragtune` extension field, e.g. Spring AI, langchain4j).
        log_level: uvicorn log level (debug, info, warning, error).
    """
    import asyncio

    import uvicorn

    from api.app import create_app
    from api.config import ApiConfig
    from ragtune.logs import setup_logging
    from ragtune.settings import load_settings

    settings = load_settings(workspace=workspace, host=host, port=port, api_key=api_key)
    default_model, generator, extra = _pick_model(model, settings.paths.runs_dir)
    if generator is not None:
        settings = load_settings(workspace=workspace, host=host, port=port, api_key=api_key,
                                 generator=generator)
    log_file = setup_logging(settings.paths.logs_dir, "serve")
    api = ApiConfig.from_settings(settings, default_model=default_model, chat_rag_default=chat_rag)
    app = create_app(settings, api_config=api, extra_adapters=extra)
    warning = exposure_warning(settings.host, api.auth_enabled)
    if warning:
        logging.getLogger(__name__).warning(warning)
        print(f"\n{'!' * 78}\n{warning}\n{'!' * 78}\n", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn_config(app, settings.host, settings.port, log_level))
    print(f"loading models (log: {log_file}) ...", flush=True)
    try:
        asyncio.run(_serve_and_announce(server, settings.host))
    except SystemExit as exc:  # uvicorn exits when it cannot bind or start the app
        raise RagtuneError(f"the server did not start on {settings.host}:{settings.port} "
                           f"(port in use, or the models failed to load: see {log_file})"
                           ) from exc
    return 0


OPEN_WARNING = ("WARNING: ragtune listens on {host}, beyond loopback, WITHOUT API keys: anyone "
                "who can reach it may ask, ingest and delete documents and read the feedback. "
                "Set RAGTUNE_API_KEYS (e.g. 'KEY1:ask,KEY2:admin') or --host 127.0.0.1.")


def exposure_warning(host: str, auth_enabled: bool) -> str | None:
    """The loud warning for a server beyond loopback without keys (None when it is fine)."""
    from ragtune.settings import is_loopback

    return None if auth_enabled or is_loopback(host) else OPEN_WARNING.format(host=host)


async def _serve_and_announce(server: Any, host: str) -> None:
    """Run uvicorn and print the URL once the models are loaded and the socket listens."""
    import asyncio

    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{shown}:{port}"
        print(f"ragtune is serving at {url}  (docs: {url}/docs, OpenAI base URL: {url}/v1)",
              flush=True)
    await task
