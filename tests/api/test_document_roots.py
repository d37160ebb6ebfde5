"""The document routes do not trust the file system: paths stay inside `documents_roots`
(symlinks resolved), the folder walk does not follow a link out of a root (a link to /etc must
not get /etc/passwd indexed), the workspace's index cannot be ingested, odd paths are a 4xx
with a message, and an upload never overwrites a different file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.app import create_app
from ingest.discover import LEAVES_ROOT, discover
from tests.fakes import EchoGenerator
from tests.serving_fixtures import serving, settings_for

EMBEDDER = "import:tests.fakes:HashEmbedder?dim=64"
ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture()
def api(tmp_path: Path):
    workspace = tmp_path / "ws"
    roots = [workspace / "uploads", tmp_path / "shared"]
    for root in roots:
        root.mkdir(parents=True)
    settings = settings_for(workspace, embedder=EMBEDDER, api_keys={"admin-key": "admin"},
                            documents_roots=roots, max_upload_files=2, max_file_mb=0.01)
    app = create_app(settings, generator=EchoGenerator(), retriever=None)
    with serving(app) as url, httpx.Client(base_url=url, headers=ADMIN, timeout=120) as client:
        yield client, settings, roots


def _ingest(client: httpx.Client, path: str) -> httpx.Response:
    return client.post("/documents/ingest", json={"path": path})


def test_a_link_to_etc_inside_a_root_does_not_get_etc_passwd_indexed(api) -> None:
    client, _, roots = api
    folder = roots[1] / "handbook"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\nEmployees get 25 days of leave.\n")
    (folder / "etc").symlink_to("/etc", target_is_directory=True)
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    (folder / "inside.md").symlink_to(folder / "leave.md")  # a link within the root is fine

    response = _ingest(client, str(folder))
    assert response.status_code == 200, response.text
    body = response.json()
    sources = [d["source"] for d in body["documents"]]
    assert [Path(s).name for s in sources] == ["inside.md"]  # leave.md via its link, once
    assert not any("/etc" in s or "passwd" in s for s in sources)
    reasons = {Path(f["path"]).name: f["reason"] for f in body["report"]["failed"]}
    assert reasons == {"etc": LEAVES_ROOT, "passwd.txt": LEAVES_ROOT}
    answer = client.post("/ask", json={"question": "root:x:0:0", "top_k": 5}).json()
    assert all("passwd" not in s["source"] and "root:" not in s["text"]
               for s in answer["sources"])
    direct = _ingest(client, str(folder / "passwd.txt"))  # naming the link itself
    assert direct.status_code == 403 and "outside the folders" in direct.text


def test_discover_confined_and_unconfined(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.md").write_text("a")
    (root / "out").symlink_to("/etc", target_is_directory=True)
    files, failures = discover([root], within=[root])
    assert files == [root / "a.md"] and [f.reason for f in failures] == [LEAVES_ROOT]
    files, _ = discover([root])  # the CLI's own `ingest DIR` still follows links
    assert len(files) > 1


@pytest.mark.parametrize(("path", "status", "words"), [
    ("a\u0000b", 422, "NUL character"),
    ("~nosuchuser/x", 422, "`~` is not expanded"),
    ("~/docs", 422, "`~` is not expanded"),
    ("/etc", 403, "outside the folders"),
    ("../../..", 403, "outside the folders"),
])
def test_odd_paths_are_a_clear_4xx(api, path: str, status: int, words: str) -> None:
    client, _, _ = api
    response = _ingest(client, path)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert client.get("/health").status_code == 200  # the connection and server are fine


def test_the_workspace_index_cannot_be_ingested(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    settings = settings_for(workspace, embedder=EMBEDDER, documents_roots=[workspace])
    settings.paths.index_dir.mkdir(parents=True)
    (settings.paths.index_dir / "notes.md").write_text("index internals")
    with serving(create_app(settings, generator=EchoGenerator(), retriever=None)) as url:
        for path in (str(settings.paths.index_dir), str(workspace), "index/notes.md"):
            response = httpx.post(f"{url}/documents/ingest", json={"path": path})
            assert response.status_code == 403, (path, response.text)
            assert "workspace's index" in response.json()["error"]["message"]


def test_same_name_upload_never_overwrites_a_different_file(api) -> None:
    client, settings, _ = api
    first = client.post("/documents", files=[("files", ("notes.md", b"# A\n\nfirst text\n"))])
    assert first.status_code == 200, first.text
    same = client.post("/documents", files=[("files", ("notes.md", b"# A\n\nfirst text\n"))])
    assert same.status_code == 200 and same.json()["saved"] == ["notes.md"]
    other = client.post("/documents", files=[("files", ("notes.md", b"# B\n\nsecond text\n"))])
    assert other.status_code == 409
    assert "already exists with different content" in other.json()["error"]["message"]
    saved = settings.paths.uploads_dir / "notes.md"
    assert saved.read_bytes() == b"# A\n\nfirst text\n"
    assert sorted(p.name for p in saved.parent.iterdir()) == ["notes.md"]  # no temp left


def test_upload_count_limit(api) -> None:
    client, settings, _ = api
    files = [("files", (f"f{i}.md", f"# {i}\n\ntext {i}\n".encode())) for i in range(3)]
    response = client.post("/documents", files=files)
    assert response.status_code == 413 and "max_upload_files" in response.text
    assert not settings.paths.uploads_dir.joinpath("f0.md").exists()
