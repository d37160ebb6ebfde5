"""The `ragtune ui` command (kept light at import time: gradio and the API load when it runs)."""

from __future__ import annotations

from pathlib import Path


def ui(host: str | None = None, port: int | None = None, api_url: str | None = None,
       workspace: Path | None = None, share: bool = False, with_api: bool = False) -> int:
    """Start the web UI (Gradio) and print its URL.

    Tabs: Chat (streamed answers, RAG on/off, top_k, base or a tuned adapter, sources under
    each answer), Compare (base, base+RAG, tuned, tuned+RAG side by side), Documents (upload
    or ingest a folder, list, remove), Fine-tune (configs, knobs, the command line, start/stop,
    loss curve, log) and Eval (the latest `ragtune eval` table and chart). The UI talks to the
    API at --api_url (settings `api_url`); when the API has keys, each visitor signs in with
    their own key (an `ask` key sees Chat and Compare, an `admin` key everything) and the UI
    sends that key, never one of its own. Without keys the UI refuses a non-loopback --host
    and --share. --with_api starts the API in the same process first.

    Args:
        host: interface for the UI (and the API with --with_api); default: settings `host`.
        port: UI port (default: settings `ui_port`, 7860; 0 picks a free one).
        api_url: the API the UI talks to (default: settings `api_url`, http://127.0.0.1:8000).
        workspace: workspace directory (index, runs, evals, uploads).
        share: also open a public Gradio share link (needs internet access).
        with_api: start the API server (settings `port`, default 8000) in this process too.
    """
    from ragtune.logs import setup_logging
    from ragtune.settings import load_settings
    from ui.auth import check_exposure
    from ui.serving import free_port

    settings = load_settings(workspace=workspace, host=host, ui_port=port, api_url=api_url)
    log_file = setup_logging(settings.paths.logs_dir, "ui")
    api = None
    if with_api:
        keys = bool(settings.api_key or settings.api_keys)
        check_exposure(settings.host, share, keys)  # before the API listens there too
        api = _start_api(settings, log_file)
        settings = load_settings(workspace=workspace, host=host, ui_port=port, api_url=api.url)
    else:
        keys = _api_has_keys(settings)
    ui_port = settings.ui_port or free_port(settings.host)
    try:
        _launch(settings, ui_port, share, keys)
    finally:
        if api is not None:
            api.stop()
    return 0


def _start_api(settings, log_file: Path):
    """The API (same settings and workspace) in a background thread of this process."""
    from api.app import create_app
    from ui.serving import serve_in_thread

    print(f"starting the API on {settings.host}:{settings.port} and loading models "
          f"(log: {log_file}) ...", flush=True)
    app = create_app(settings)
    app.state.settings = settings
    if not any(getattr(r, "path", "") == "/documents" for r in app.routes):
        from api.routes import documents

        app.include_router(documents.router)
    api = serve_in_thread(app, settings.host, settings.port, log_level="info")
    print(f"API: {api.url}  (docs: {api.url}/docs, OpenAI base URL: {api.url}/v1)", flush=True)
    return api


def _api_has_keys(settings) -> bool:
    """Whether the API asks for keys (its /health); an API that cannot be reached counts as
    keyless, so the UI is not published beyond loopback without a login."""
    from ui.auth import api_has_keys
    from ui.client import ApiClient, ApiError

    probe = ApiClient(settings.api_url)
    try:
        return api_has_keys(probe)
    except ApiError as err:
        print(f"warning: {err}", flush=True)
        return False
    finally:
        probe.close()


def _launch(settings, port: int, share: bool, keys: bool) -> None:
    """Build and serve the UI until interrupted (Gradio prints the URL). With an API that has
    keys, visitors sign in with their own key; without, only loopback and no share link."""
    from ui.app import build_ui, launch_options
    from ui.auth import LOGIN_MESSAGE, Visitors, check_exposure

    check_exposure(settings.host, share, keys)
    visitors = Visitors(settings.api_url) if keys else None
    demo = build_ui(settings, visitors=visitors)
    demo.queue(default_concurrency_limit=8)
    print(f"UI talks to the API at {settings.api_url}"
          + (" (visitors sign in with their API key)" if keys else ""), flush=True)
    demo.launch(server_name=settings.host, server_port=port, share=share, ssr_mode=False,
                show_error=False, footer_links=["api", "settings"],
                auth=visitors.login if visitors else None, auth_message=LOGIN_MESSAGE,
                **launch_options())
