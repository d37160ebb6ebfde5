"""`ragtune ui --with_api`: one command serves the API and the UI. Run as a real process
whose generator is an upstream OpenAI-compatible server (the test stack's API), so no model
loads; the UI is driven through gradio_client, then the process is interrupted."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.ui.conftest import EMBEDDER, Stack, write_docs
from ui.commands import ui
from ui.serving import free_port


def test_entry_function_signature_and_help() -> None:
    params = inspect.signature(ui).parameters
    assert list(params) == ["host", "port", "api_url", "workspace", "share", "with_api"]
    assert ui.__doc__.splitlines()[0] == "Start the web UI (Gradio) and print its URL."
    assert "--with_api" in ui.__doc__


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()}")


@pytest.mark.integration
def test_ui_with_api_serves_both(ui_stack: Stack, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    api_port, ui_port = free_port(), free_port()
    env = {**os.environ, "RAGTUNE_WORKSPACE": str(tmp_path / "ws"), "RAGTUNE_HOST": "127.0.0.1",
           "RAGTUNE_PORT": str(api_port), "RAGTUNE_EMBEDDER": EMBEDDER,
           "RAGTUNE_GENERATOR_BACKEND": "openai", "RAGTUNE_UPSTREAM_MODEL": "base",
           "RAGTUNE_UPSTREAM_BASE_URL": f"{ui_stack.api_url}/v1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path / "ui.log"
    code = f"import sys; from ui.commands import ui; sys.exit(ui(port={ui_port}, with_api=True))"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp_path, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(f"http://127.0.0.1:{ui_port}/", proc, log)
        output = log.read_text()
        assert f"API: http://127.0.0.1:{api_port}" in output
        assert f"UI talks to the API at http://127.0.0.1:{api_port}" in output
        assert httpx.get(f"http://127.0.0.1:{api_port}/health").json()["index"] is False

        client = Client(f"http://127.0.0.1:{ui_port}", verbose=False)
        history, _ = client.predict("Leave?", [], False, 2, "base", 32, 0.0, api_name="/chat")
        assert "answered by base" in str(history[-1]["content"])
        history, _ = client.predict("Leave?", [], True, 2, "base", 32, 0.0, api_name="/chat")
        assert "no index" in str(history[-1]["content"])  # a readable error, not a traceback

        docs = write_docs(tmp_path / "docs")
        _, _, status, _ = client.predict([handle_file(str(docs / "leave.md"))],
                                         api_name="/upload")
        assert "1 added" in status
        history, _ = client.predict("How many days of annual leave?", [], True, 2, "base", 32,
                                    0.0, api_name="/chat")
        assert "leave.md" in str(history[-1]["content"])  # sources from the new document
        assert (tmp_path / "ws" / "uploads" / "leave.md").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("`ui --with_api` did not stop on Ctrl-C:\n" + log.read_text())
