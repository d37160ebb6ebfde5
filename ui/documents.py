"""The Documents tab: upload files or name a folder on the server and ingest them (through the
API, so the running server's index is the one updated), see every indexed document with its
status and error, and remove one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ui.client import ApiClient, ApiError

COLUMNS = ["source", "status", "chunks", "format", "encoding", "error"]
FILE_TYPES = [".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".json", ".jsonl",
              ".csv"]


@dataclass
class DocumentsTab:
    files: gr.File
    upload: gr.Button
    folder: gr.Textbox
    keep_missing: gr.Checkbox
    ingest: gr.Button
    status: gr.Markdown
    table: gr.Dataframe
    choice: gr.Dropdown
    remove: gr.Button
    refresh: gr.Button


def report_markdown(result: dict[str, Any]) -> str:
    """The ingest report: summary line, then each failed file with its reason."""
    lines = [f"✅ {result.get('summary', 'done')}"]
    for failure in (result.get("report") or {}).get("failed", []):
        lines.append(f"- ❌ `{failure.get('path')}`: {failure.get('reason')}")
    return "\n".join(lines)


def listing_outputs(listing: dict[str, Any]) -> tuple[Any, Any]:
    """(table rows, dropdown update) for a `/documents` listing."""
    docs = listing.get("documents", [])
    rows = [[d.get(c) if d.get(c) is not None else "" for c in COLUMNS] for d in docs]
    choices = [(f"{d['source']} ({d['status']}, {d['chunks']} chunks)", d["id"]) for d in docs]
    return (gr.update(value=rows or None),
            gr.update(choices=choices, value=choices[0][1] if choices else None))


def _stats_line(listing: dict[str, Any]) -> str:
    if not listing.get("index"):
        return "No index yet: upload documents or ingest a folder to create it."
    stats = listing.get("stats") or {}
    return (f"{stats.get('documents', 0)} documents, {stats.get('chunks', 0)} chunks "
            f"(embedder {stats.get('embedder', '?')}).")


def refresh_fn(client: ApiClient) -> Callable[[], tuple[Any, Any, str]]:
    def refresh() -> tuple[Any, Any, str]:
        try:
            listing = client.documents()
        except ApiError as err:
            return gr.update(), gr.update(), f"⚠️ {err}"
        return (*listing_outputs(listing), _stats_line(listing))

    return refresh


def upload_fn(client: ApiClient) -> Callable[..., tuple[Any, Any, str, Any]]:
    """Upload and ingest the picked files one by one (the progress bar counts files)."""

    def upload(files: list[str] | None, progress: gr.Progress = gr.Progress()
               ) -> tuple[Any, Any, str, Any]:
        paths = [Path(f) for f in (files or [])]
        if not paths:
            return gr.update(), gr.update(), "Pick one or more files first.", gr.update()
        lines, listing = [], None
        for i, path in enumerate(paths):
            progress((i, len(paths)), desc=f"ingesting {path.name}", unit="files")
            try:
                result = client.upload([path])
            except ApiError as err:
                lines.append(f"- ❌ `{path.name}`: {err}")
                continue
            listing = result
            lines.append(f"- `{path.name}`: " + report_markdown(result).replace("\n", "\n  "))
        progress((len(paths), len(paths)), desc="done", unit="files")
        if listing is None:
            table, choice = gr.update(), gr.update()
        else:
            table, choice = listing_outputs(listing)
        return table, choice, "\n".join(lines), None

    return upload


def ingest_fn(client: ApiClient) -> Callable[..., tuple[Any, Any, str]]:
    """Ingest a folder (or file) that is on the API's machine."""

    def ingest(folder: str, keep_missing: bool, progress: gr.Progress = gr.Progress()
               ) -> tuple[Any, Any, str]:
        folder = (folder or "").strip()
        if not folder:
            return gr.update(), gr.update(), "Name a folder on the server first."
        progress(None, desc=f"ingesting {folder} (see the API log for details)")
        try:
            result = client.ingest_path(folder, keep_missing=bool(keep_missing))
        except ApiError as err:
            return gr.update(), gr.update(), f"⚠️ {err}"
        return (*listing_outputs(result), report_markdown(result))

    return ingest


def remove_fn(client: ApiClient) -> Callable[[str | None], tuple[Any, Any, str]]:
    def remove(doc_id: str | None) -> tuple[Any, Any, str]:
        if not doc_id:
            return gr.update(), gr.update(), "Pick a document to remove."
        try:
            result = client.remove_document(doc_id)
        except ApiError as err:
            return gr.update(), gr.update(), f"⚠️ {err}"
        return (*listing_outputs(result),
                f"🗑 removed `{result['removed']}` ({result['chunks_removed']} chunks)")

    return remove


def build_documents_tab(client: ApiClient) -> DocumentsTab:
    """The Documents tab's layout and events (inside an open `gr.Tab`)."""
    with gr.Row():
        with gr.Column():
            files = gr.File(label="Upload documents", file_count="multiple",
                            file_types=FILE_TYPES, type="filepath", elem_id="rt-doc-files")
            upload = gr.Button("Upload and ingest", variant="primary", elem_id="rt-doc-upload")
        with gr.Column():
            folder = gr.Textbox(label="…or a folder on the server (inside its working directory "
                                "or workspace)", placeholder="data/docs", elem_id="rt-doc-folder")
            keep_missing = gr.Checkbox(False, label="Keep documents whose files are gone")
            ingest = gr.Button("Ingest folder", elem_id="rt-doc-ingest")
    status = gr.Markdown(elem_id="rt-doc-status")
    table = gr.Dataframe(headers=COLUMNS, label="Indexed documents", interactive=False,
                         wrap=True, elem_id="rt-doc-table")
    with gr.Row():
        choice = gr.Dropdown([], label="Document", scale=4, elem_id="rt-doc-choice")
        remove = gr.Button("Remove from index", variant="stop", scale=1)
        refresh = gr.Button("↻ Refresh", scale=1)
    tab = DocumentsTab(files, upload, folder, keep_missing, ingest, status, table, choice,
                       remove, refresh)
    upload.click(upload_fn(client), [files], [table, choice, status, files], api_name="upload")
    ingest.click(ingest_fn(client), [folder, keep_missing], [table, choice, status],
                 api_name="ingest_folder")
    remove.click(remove_fn(client), [choice], [table, choice, status], api_name="remove_document")
    refresh.click(refresh_fn(client), None, [table, choice, status], api_name="documents")
    return tab
