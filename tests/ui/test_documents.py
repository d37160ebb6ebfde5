"""The /documents routes (upload, ingest a folder, list, remove) on a live API whose own
index is the one updated, so retrieval sees each change; and the Documents tab driving them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ui.conftest import EMBEDDER, ReasoningEcho, api_app, write_docs
from ui.client import ApiClient, ApiError

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)


@dataclass
class Api:
    url: str
    workspace: Path
    client: ApiClient


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[Api]:
    """A live API that starts with no index at all (the first upload creates it)."""
    from ragtune.settings import load_settings
    from ui.serving import serve_in_thread

    settings = load_settings(workspace=tmp_path / "ws", embedder=EMBEDDER, top_k=3,
                             max_file_mb=0.01)
    server = serve_in_thread(api_app(settings, ReasoningEcho()))
    client = ApiClient(server.url)
    try:
        yield Api(server.url, settings.paths.root, client)
    finally:
        client.close()
        server.stop()


def _sources(client: ApiClient, question: str) -> list[str]:
    return [s["source"] for s in client.ask(question, use_rag=True)["sources"]]


def test_upload_list_ask_remove(api: Api, tmp_path: Path) -> None:
    client = api.client
    assert client.documents() == {"index": False, "documents": [], "stats": {}}
    with pytest.raises(ApiError, match="no index"):
        client.ask("annual leave?", use_rag=True)
    docs = write_docs(tmp_path / "picked")
    result = client.upload([docs / "leave.md", docs / "it.md"])
    assert result["saved"] == ["leave.md", "it.md"] and result["report"]["failed"] == []
    rows = {Path(d["source"]).name: d for d in result["documents"]}
    assert set(rows) == {"leave.md", "it.md"}
    assert all(d["status"] == "ok" and d["chunks"] >= 1 and d["uploaded"] for d in rows.values())
    assert (api.workspace / "uploads" / "leave.md").read_text() == (docs / "leave.md").read_text()
    assert client.health()["index"] is True
    assert Path(_sources(client, "How many days of annual leave?")[0]).name == "leave.md"

    removed = client.remove_document(rows["leave.md"]["id"])
    assert Path(removed["removed"]).name == "leave.md" and removed["chunks_removed"] >= 1
    assert [Path(d["source"]).name for d in removed["documents"]] == ["it.md"]
    assert not (api.workspace / "uploads" / "leave.md").exists()  # the uploaded copy went too
    assert "leave.md" not in {Path(s).name for s in _sources(client, "annual leave days")}
    with pytest.raises(ApiError, match="no document with id") as err:
        client.remove_document(rows["leave.md"]["id"])
    assert err.value.status == 404


def test_upload_names_are_sanitised_and_bad_files_reported(api: Api, tmp_path: Path) -> None:
    evil = b"# Evil\n\nThis file tried to escape the uploads folder.\n"
    response = httpx.post(f"{api.url}/documents", files=[
        ("files", ("../../../etc/evil notes.md", evil, "text/markdown")),
        ("files", ("..\\..\\win\\empty.txt", b"   \n", "text/plain"))])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["saved"] == ["evil notes.md", "empty.txt"]
    assert sorted(p.name for p in (api.workspace / "uploads").iterdir()) == [
        "empty.txt", "evil notes.md"]
    failed = body["report"]["failed"]
    assert len(failed) == 1 and failed[0]["path"].endswith("empty.txt") and failed[0]["reason"]
    status = {Path(d["source"]).name: d for d in body["documents"]}
    assert status["evil notes.md"]["status"] == "ok"
    assert status["empty.txt"]["status"] == "error" and status["empty.txt"]["error"]

    unsupported = httpx.post(f"{api.url}/documents",
                             files=[("files", ("tool.exe", b"MZ", "application/octet-stream"))])
    assert unsupported.status_code == 422 and "unsupported file type" in unsupported.text
    too_big = httpx.post(f"{api.url}/documents",
                         files=[("files", ("big.txt", b"word " * 4000, "text/plain"))])
    assert too_big.status_code == 413 and "max_file_mb" in too_big.json()["error"]["message"]
    assert not any(p.name.startswith(".") for p in (api.workspace / "uploads").iterdir())


def test_ingest_folder_only_inside_allowed_roots(api: Api, tmp_path: Path,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    client = api.client  # documents_roots is not set: only <workspace>/uploads may be read
    inside = write_docs(api.workspace / "uploads" / "incoming")
    result = client.ingest_path(str(inside))
    assert sorted(Path(d["source"]).name for d in result["documents"]) == [
        "it.md", "leave.md", "travel.md"]
    assert "3 added" in result["summary"]
    (inside / "travel.md").unlink()
    again = client.ingest_path(str(inside))
    assert "1 removed" in again["summary"] and len(again["documents"]) == 2

    write_docs(api.workspace / "uploads" / "docs")
    relative = client.ingest_path("docs", keep_missing=True)  # relative to the first root
    assert "1 added" in relative["summary"] and "2 duplicate" in relative["summary"]
    statuses = sorted(d["status"] for d in relative["documents"])
    assert statuses == ["duplicate", "duplicate", "ok", "ok", "ok"]

    outside = write_docs(tmp_path_factory.mktemp("outside"))
    for path in (str(outside), f"{api.workspace}/uploads/../../{outside.name}",
                 str(api.workspace), str(tmp_path)):
        with pytest.raises(ApiError, match="outside the folders") as err:
            client.ingest_path(path)
        assert err.value.status == 403 and "documents_roots" in str(err.value)
    with pytest.raises(ApiError, match="no such file"):
        client.ingest_path("missing")


def test_documents_routes_need_the_api_key(tmp_path: Path) -> None:
    from ragtune.settings import load_settings
    from ui.serving import serve_in_thread

    settings = load_settings(workspace=tmp_path / "ws", embedder=EMBEDDER, api_key="s3cret")
    server = serve_in_thread(api_app(settings, ReasoningEcho()))
    try:
        with pytest.raises(ApiError, match="API key") as err:
            ApiClient(server.url).documents()
        assert err.value.status == 401
        assert ApiClient(server.url, "s3cret").documents()["index"] is False
    finally:
        server.stop()


def test_documents_tab_uploads_lists_and_removes(api: Api, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    from ragtune.settings import load_settings
    from tests.ui.conftest import launch_ui

    settings = load_settings(workspace=api.workspace, embedder=EMBEDDER, api_url=api.url)
    demo, url = launch_ui(settings, tmp_path)
    try:
        ui = Client(url, verbose=False)
        docs = write_docs(tmp_path / "picked")
        table, choice, status, _ = ui.predict(
            [handle_file(str(docs / "leave.md")), handle_file(str(docs / "travel.md"))],
            api_name="/upload")
        rows = table["value"]["data"]
        assert sorted(Path(row[0]).name for row in rows) == ["leave.md", "travel.md"]
        assert [row[1] for row in rows] == ["ok", "ok"] and status.count("ingest:") == 2
        assert [label for label, _ in choice["choices"]][0].endswith("(ok, 1 chunks)")
        table, choice, status = ui.predict(choice["value"], api_name="/remove_document")
        assert status.startswith("🗑 removed") and len(table["value"]["data"]) == 1
        _, _, status = ui.predict("/definitely/not/allowed", False, api_name="/ingest_folder")
        assert status.startswith("⚠️") and "outside the folders" in status
    finally:
        demo.close()


def test_an_index_built_elsewhere_is_picked_up(api: Api, tmp_path: Path) -> None:
    """A server that started without an index uses the one `ragtune ingest` builds later."""
    from ingest.pipeline import ingest_documents
    from ragtune.settings import load_settings

    assert api.client.documents()["index"] is False
    settings = load_settings(workspace=api.workspace, embedder=EMBEDDER)
    ingest_documents([write_docs(tmp_path / "docs")], settings, progress=False)
    listing = api.client.documents()
    assert listing["index"] is True and len(listing["documents"]) == 3
    assert Path(_sources(api.client, "daily travel allowance per diem")[0]).name == "travel.md"
