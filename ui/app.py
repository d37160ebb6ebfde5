"""The Gradio app: Chat, Compare, Documents, Fine-tune and Eval tabs.

Chat, Compare and Documents talk to the ragtune API over HTTP (`settings.api_url`); when the
API has keys, each visitor signs in with their own key (ui.auth) and every call carries it, so
a visitor sees what that key's role allows (`ask`: Chat and Compare; `admin`: also Documents,
Fine-tune and Eval). Fine-tune and Eval work on the local workspace, as LLaMA-Factory's board
does, and refuse a visitor without the admin role. `build_ui(settings)` returns the Blocks; `launch_options()` gives
the theme and CSS to pass to `launch()` (Gradio 6 takes them there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ragtune.settings import Settings
from ui.chat import (ChatTab, CompareTab, build_chat_tab, build_compare_tab,
                     refresh_adapters_fn, refresh_models_fn)
from ui.auth import ADMIN_TABS, Visitors, tab_visibility
from ui.client import ApiClient, ApiError
from ui.documents import DocumentsTab, build_documents_tab
from ui.documents import refresh_fn as documents_refresh
from ui.evals import EvalTab, build_eval_tab
from ui.evals import refresh_fn as eval_refresh
from ui.feedback import CompareFeedback, build_compare_feedback, wire_chat_feedback
from ui.finetune import FinetuneTab, build_finetune_tab

CSS = """
.rt-source summary { cursor: pointer; }
.rt-chunk { font-size: 0.9em; opacity: 0.9; margin: 0.3em 0 0.6em 1em; }
"""
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]


@dataclass
class RagtuneUI:
    """The built app and its tabs' components (for extensions such as feedback buttons)."""

    blocks: gr.Blocks
    client: ApiClient
    chat: ChatTab
    compare: CompareTab
    documents: DocumentsTab
    finetune: FinetuneTab
    eval: EvalTab
    status: gr.Markdown
    preference: CompareFeedback | None = None  # the "this one is better" row of Compare
    tabs: dict[str, gr.Tab] | None = None
    visitors: Visitors | None = None  # the signed-in visitors, when the API has keys


def launch_options() -> dict[str, Any]:
    """`launch()` keyword arguments: a theme with system fonts (no font downloads) and CSS."""
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    return {"theme": theme, "css": CSS}


def api_status(client: ApiClient) -> str:
    """One line on the API: where it is, whether it is up, its models and index."""
    try:
        health = client.health()
    except ApiError as err:
        return f"🔴 API {client.base_url}: {err}"
    index = "index loaded" if health.get("index") else "no index (Documents tab: add some)"
    models = ", ".join(health.get("models") or []) or "?"
    return f"🟢 API {client.base_url} · models: {models} · {index}"


def make_client(settings: Settings, visitors: Visitors | None = None) -> ApiClient:
    """The UI's API client: the signed-in visitor's key on every call, never a key of the UI's
    own (settings `api_key` is the API's, not the UI's)."""
    return ApiClient(settings.api_url, key_source=visitors.key if visitors else None)


def build(settings: Settings, client: ApiClient | None = None,
          root: Path | None = None, visitors: Visitors | None = None) -> RagtuneUI:
    """Build the app and return it with its components; `root` holds configs/finetune/.
    With `visitors` (launch with `auth=visitors.login`), calls carry each visitor's key."""
    client = client or make_client(settings, visitors)
    guard = (lambda: visitors.require_admin("this tab")) if visitors else None
    root = Path(root or Path.cwd())
    paths = settings.paths
    limits = dict(default_top_k=settings.top_k, max_top_k=settings.max_top_k,
                  default_max_new_tokens=settings.max_new_tokens)
    with gr.Blocks(title=f"{settings.assistant_name} · ragtune", analytics_enabled=False) as demo:
        gr.Markdown(f"## {settings.assistant_name}: ask your documents, compare base and tuned, "
                    "train")
        status = gr.Markdown(elem_id="rt-api-status")
        tabs = {}
        with gr.Tab("Chat", id="chat") as tabs["chat"]:
            chat = build_chat_tab(client, **limits)
            wire_chat_feedback(client, chat)
        with gr.Tab("Compare", id="compare") as tabs["compare"]:
            compare = build_compare_tab(client, **limits)
            preference = build_compare_feedback(client, compare)
        admin_tabs = visitors is None  # shown on load to an admin visitor (Gradio hides
        # a tab that starts visible only unreliably, so they start hidden behind a login)
        with gr.Tab("Documents", id="documents", visible=admin_tabs) as tabs["documents"]:
            documents = build_documents_tab(client)
        with gr.Tab("Fine-tune", id="finetune", visible=admin_tabs) as tabs["finetune"]:
            finetune = build_finetune_tab(paths.root, root, guard)
        with gr.Tab("Eval", id="eval", visible=admin_tabs) as tabs["eval"]:
            evals = build_eval_tab(paths.evals_dir, guard)
        for name, tab in tabs.items():  # the board's live refresh ticks only while it shows
            tab.select(lambda on=(name == "finetune"): gr.Timer(active=on), None,
                       finetune.timer, api_name=False, show_progress="hidden")
        ui = RagtuneUI(demo, client, chat, compare, documents, finetune, evals, status,
                       preference, tabs, visitors)
        _wire_refresh(ui, paths.evals_dir)
    return ui


def _wire_refresh(ui: RagtuneUI, evals_dir: Path) -> None:
    """Model pickers, document list, eval and API status are filled on page load and on ↻."""
    client = ui.client
    models = refresh_models_fn(client)
    adapters = refresh_adapters_fn(client)
    ui.chat.refresh.click(models, [ui.chat.model], [ui.chat.model, ui.chat.notice],
                          api_name="models")
    ui.compare.refresh.click(adapters, [ui.compare.adapter],
                             [ui.compare.adapter, ui.compare.notice], api_name=False)
    docs = documents_refresh(client)
    evals = eval_refresh(evals_dir)
    tabs = ui.tabs or {}

    def on_load(model: str | None, adapter: str | None) -> tuple[Any, ...]:
        visible = tab_visibility(ui.visitors)
        admin = all(visible.values())
        listed = docs() if admin else (gr.update(), gr.update(), gr.update())
        evaluated = evals() if admin else (gr.update(),) * 4
        shown = [gr.update(visible=visible[name]) for name in ADMIN_TABS if name in tabs]
        return (_status_line(client, ui.visitors), *models(model), *adapters(adapter),
                *listed, *evaluated, *shown)

    ui.blocks.load(on_load, [ui.chat.model, ui.compare.adapter],
                   [ui.status, ui.chat.model, ui.chat.notice, ui.compare.adapter,
                    ui.compare.notice, ui.documents.table, ui.documents.choice,
                    ui.documents.status, ui.eval.summary, ui.eval.answers, ui.eval.retrieval,
                    ui.eval.chart, *[tabs[name] for name in ADMIN_TABS if name in tabs]],
                   api_name=False)


def _status_line(client: ApiClient, visitors: Visitors | None) -> str:
    """The API status, plus the visitor's role when they signed in."""
    line = api_status(client)
    role = visitors.role() if visitors else None
    return f"{line} · signed in: {role} key" if role else line


def build_ui(settings: Settings, client: ApiClient | None = None,
             root: Path | None = None, visitors: Visitors | None = None) -> gr.Blocks:
    """The Gradio Blocks of the ragtune UI (see `build` for the components)."""
    return build(settings, client, root, visitors).blocks
