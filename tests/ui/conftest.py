"""A live stack for the UI tests: the real API app (real uvicorn on loopback) over a real
hybrid index of a few documents (fake hash embedder), a canned-reply generator that reasons
like DeepSeek-R1, and the Gradio UI launched on another loopback port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tests.fakes import EchoGenerator  # noqa: E402
from ragtune.types import GenerationRequest  # noqa: E402

EMBEDDER = "import:tests.fakes:HashEmbedder?dim=64"
DOCS = {
    "leave.md": "# Leave policy\n\n## Annual leave\n\nEmployees get 25 days of annual leave "
                "per calendar year. Unused days carry over until March.\n",
    "it.md": "# IT help\n\n## Passwords\n\nReset your password at the self-service portal. "
             "Passwords expire every 90 days.\n",
    "travel.md": "# Travel\n\n## Per diem\n\nThe daily travel allowance is 60 euros for "
                 "domestic trips.\n",
}


class ReasoningEcho(EchoGenerator):
    """Canned replies that start with a `<think>` block, naming the model that answered."""

    def _answer(self, req: GenerationRequest) -> str:
        return (f"<think>The question is about the documents; checking passage 1 with "
                f"{req.model}.</think>Employees get 25 days of annual leave [1]. "
                f"(answered by {req.model})")


@dataclass
class Stack:
    root: Path
    workspace: Path
    docs: Path
    api_url: str
    ui_url: str
    generator: ReasoningEcho


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def api_app(settings, generator, retriever=None):
    """The API app as `ragtune serve` builds it, plus the documents routes and settings."""
    from api.app import create_app
    from api.routes import documents

    app = create_app(settings, generator=generator, retriever=retriever)
    app.state.settings = settings
    if not any(getattr(r, "path", "") == "/documents" for r in app.routes):
        app.include_router(documents.router)
    return app


def launch_ui(settings, root: Path):
    """Build and launch the UI on a free loopback port; returns (blocks, url)."""
    from ui.app import build_ui, launch_options
    from ui.serving import free_port

    demo = build_ui(settings, root=root)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), ssr_mode=False, quiet=True,
                            **launch_options())
    return demo, url.rstrip("/")


def write_finetune_config(root: Path) -> Path:
    path = root / "configs" / "finetune" / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("name: tiny-run\nstage: sft\nmodel: embedded:smollm2-135m\n"
                    "dataset: demo_sft\nlearning_rate: 0.0003\nmax_steps: 5\nlora_rank: 4\n"
                    "lora_alpha: 8\ncutoff_len: 128\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API + UI over an index of DOCS; read-only for the tests that use it."""
    from ingest.pipeline import ingest_documents
    from ragtune.settings import load_settings
    from retrieval.index import open_index
    from ui.serving import serve_in_thread

    root = tmp_path_factory.mktemp("ui-stack")
    workspace, docs = root / "workspace", write_docs(root / "docs")
    write_finetune_config(root)
    settings = load_settings(workspace=workspace, embedder=EMBEDDER, top_k=2)
    ingest_documents([docs], settings, progress=False)
    generator = ReasoningEcho(adapters=["tuned-a"])
    index = open_index(settings)
    api = serve_in_thread(api_app(settings, generator, index))
    demo, url = launch_ui(load_settings(workspace=workspace, embedder=EMBEDDER, top_k=2,
                                        api_url=api.url), root)
    try:
        yield Stack(root, workspace, docs, api.url, url, generator)
    finally:
        demo.close()
        api.stop()
        index.close()
