"""The Java client (run by a real JDK with HttpClient defaults: it offers `Upgrade: h2c`) and
`serve` as the CLI runs it: uvicorn with h11, the URL printed, `--model RUN` as default."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.commands import _pick_model
from ragtune.errors import ModelNotFoundError
from tests.fakes import EchoGenerator
from tests.serving_fixtures import serving, settings_for
from tests.api.test_http import raw_request

QUESTION = "How many days of annual leave do employees get?"


@pytest.mark.integration
def test_java_client_gets_cited_answers(tmp_path, retriever, repo_root: Path) -> None:
    if shutil.which("java") is None:  # CI installs a JDK: a missing one fails, never skips
        pytest.fail("no JDK on PATH (`java` not found): apt-get install -y default-jdk-headless",
                    pytrace=False)
    from api.config import ApiConfig

    app = create_app(settings_for(tmp_path), generator=EchoGenerator(reply="25 days [1]."),
                     retriever=retriever, api_config=ApiConfig(api_key="java-key"))
    source = repo_root / "examples" / "java" / "AskClient.java"
    with serving(app) as url:
        env = {**os.environ, "RAGTUNE_API_KEY": "java-key"}
        run = subprocess.run(["java", str(source), url, QUESTION], capture_output=True,
                             text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "answer: [base] 25 days [1]." in out
    assert "source [1] handbook/leave.md #0" in out
    assert "content: [base] 25 days [1]." in out
    assert "(stream)\n[base] 25 days [1].\nstreamed: 19 characters" in out


def test_pick_model(adapter_workspace, tiny_llama_dir) -> None:
    runs = adapter_workspace / "runs"
    assert _pick_model(None, runs) == ("base", None, {})
    assert _pick_model("alpha", runs) == ("alpha", None, {})
    assert _pick_model(str(runs / "beta"), runs) == ("beta", None,
                                                     {"beta": (runs / "beta" / "adapter").resolve()})
    assert _pick_model(str(tiny_llama_dir), runs) == ("base", str(tiny_llama_dir), {})
    with pytest.raises(ModelNotFoundError, match="runs: alpha, beta"):
        _pick_model("no-such-run", runs)


@pytest.mark.integration
def test_serve_prints_its_url_and_keeps_h2c_bodies(adapter_workspace, tiny_llama_dir,
                                                   repo_root: Path) -> None:
    code = ("import sys; from api.commands import serve; "
            f"sys.exit(serve(model='alpha', port=0, workspace={str(adapter_workspace)!r}))")
    env = {**os.environ, "RAGTUNE_GENERATOR": str(tiny_llama_dir), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(repo_root)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=repo_root)
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("ragtune is serving at "):
                url = line.split()[4]
                break
        assert url is not None, "serve did not print its URL"
        health = httpx.get(f"{url}/health").json()
        assert health["default_model"] == "alpha" and health["models"] == ["base", "alpha", "beta"]
        body = json.dumps({"question": "hi", "use_rag": False, "max_new_tokens": 3}).encode()
        status, _, payload = raw_request(url, (
            b"POST /ask HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body))
        assert status == 200, payload
        answer = json.loads(payload)
        assert answer["model"] == "alpha" and answer["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
