"""`ragtune eval` end to end: the entry function on a tiny model with a real index and adapter,
the reranker row with a tiny cross-encoder, and `--url` against a real uvicorn server."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.evaluation.test_eval import CHUNKS, QA, add_run, write_qa


def write_docs(root: Path) -> Path:
    """The fake corpus as Markdown files under root/docs (sources become docs/...)."""
    docs = root / "docs"
    for chunk in CHUNKS:
        path = docs / chunk.source.removeprefix("data/docs/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {chunk.section or 'Overview'}\n\n{chunk.text}\n", encoding="utf-8")
    return docs


def save_lora_adapter(model_dir: Path, out: Path) -> Path:
    """A freshly initialised LoRA adapter for the tiny model, saved as a run's adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                  init_lora_weights=False))
    torch.manual_seed(1)
    peft_model.save_pretrained(out)
    return out


def save_tiny_cross_encoder(out: Path) -> Path:
    """A 1-layer BERT sequence classifier (one label) with a word-level vocab: a CrossEncoder."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    words = sorted({w.strip("?.,'").lower() for c in CHUNKS for w in c.text.split()} |
                   {w.strip("?.,'").lower() for q in QA for w in q["question"].split()})
    out.mkdir(parents=True)
    (out / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                              *[w for w in words if w]]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def ingested(workspace, tmp_path, monkeypatch, tiny_llama_dir):
    """A workspace with a real index (fake embedder), the tiny model and one tuned run."""
    from ingest.commands import ingest

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGTUNE_GENERATOR", str(tiny_llama_dir))
    assert ingest([write_docs(tmp_path)], embedder="import:tests.fakes:HashEmbedder?dim=64", chunk_size=200,
                  pairs="none") == 0
    add_run(workspace, "run1")
    save_lora_adapter(tiny_llama_dir, workspace / "runs" / "run1" / "adapter")
    return workspace


def test_entry_function_on_tiny_model_with_index_adapter_and_reranker(ingested, tmp_path,
                                                                        capsys):
    from evaluation.command import evaluate

    qa = write_qa(tmp_path / "qa.jsonl")
    reranker = save_tiny_cross_encoder(tmp_path / "cross-encoder")
    code = evaluate(qa=qa, model="base,latest", k=2, top_k=2, max_new_tokens=4, reranker=str(reranker))
    out = capsys.readouterr().out
    assert code == 0
    for name in ("base+RAG", "run1+RAG", "dense", "bm25", "hybrid", "hybrid+rerank"):
        assert name in out
    run_dir = Path(out.strip().split()[-1])
    results = json.loads((run_dir / "results.json").read_text())
    assert [c["config"] for c in results["configurations"]] == ["base", "base+RAG", "run1",
                                                               "run1+RAG"]
    assert [r["mode"] for r in results["retrieval"]] == ["dense", "bm25", "hybrid",
                                                         "hybrid+rerank"]
    for conf in results["configurations"]:
        assert conf["n"] == 4 and 0.0 <= conf["f1"] <= 1.0 and conf["seconds"] >= 0
    answers = [json.loads(x) for x in (run_dir / "answers.jsonl").read_text().splitlines()]
    rag = [a for a in answers if a["rag"]]
    assert rag and all(len(a["sources"]) == 2 and a["sources"][0].startswith("docs/")
                       for a in rag)
    assert {a["model"] for a in answers} == {"base", "run1"}
    assert (run_dir / "chart.png").stat().st_size > 10_000


def test_json_output_and_missing_reranker_note(ingested, tmp_path, capsys):
    from evaluation.command import evaluate

    qa = write_qa(tmp_path / "qa.jsonl")
    code = evaluate(qa=qa, model="base", k=2, max_new_tokens=2, limit=2, json=True,
                    reranker=str(tmp_path / "no-such-cross-encoder"))
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [c["config"] for c in printed["configurations"]] == ["base", "base+RAG"]
    assert printed["configurations"][0]["n"] == 2
    assert any(n.startswith("reranker: not available offline") for n in printed["notes"])
    assert Path(printed["output_dir"], "results.csv").is_file()


@contextmanager
def serving(app):
    """A real uvicorn server (ragtune's settings) on a free loopback port."""
    import uvicorn

    from api.commands import uvicorn_config

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.integration
def test_url_mode_asks_a_live_server_with_its_api_key(workspace, tmp_path, monkeypatch):
    from api.app import create_app
    from serving.config import AssistantConfig
    from evaluation.run import run
    from evaluation.evaluate import EvalConfig
    from tests.fakes import EchoGenerator, StaticRetriever
    from ragtune.settings import load_settings

    monkeypatch.setenv("RAGTUNE_API_KEY", "s3cret")
    add_run(workspace, "run1")
    generator = EchoGenerator(adapters=["run1"])
    app = create_app(load_settings(), generator=generator, retriever=StaticRetriever(CHUNKS),
                     assistant_config=AssistantConfig(relevance_threshold=-1.0,
                                                      on_unsupported="flag",
                                                      answerable_threshold=0.0))
    qa = write_qa(tmp_path / "qa.jsonl")
    with serving(app) as url:
        result, out = run(EvalConfig(qa=qa, models="base,run1", k=4, max_new_tokens=512,
                                     url=url), show_progress=False)
    by_name = {c["config"]: c for c in result.configurations}
    assert list(by_name) == ["base", "base+RAG", "run1", "run1+RAG"]
    # Same fake, same scores as in process: the reference is echoed back only with context.
    assert by_name["base"]["contains"] == 0.0
    assert by_name["run1+RAG"]["contains"] == pytest.approx(0.75)
    assert by_name["base+RAG"]["citation"] == 1.0
    assert len(generator.calls) == 4 * 4
    assert result.retrieval == []  # no local index: the ablation is skipped, and says so
    assert any("ablation skipped" in n for n in result.notes)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["url"] == url and config["resolved"]["generator"] == f"server {url}"


@pytest.mark.integration
def test_url_mode_without_the_key_is_refused(workspace, tmp_path, monkeypatch):
    from api.app import create_app
    from evaluation.run import run
    from evaluation.evaluate import EvalConfig
    from ragtune.errors import RagtuneError
    from tests.fakes import EchoGenerator
    from ragtune.settings import load_settings

    monkeypatch.setenv("RAGTUNE_API_KEY", "s3cret")
    app = create_app(load_settings(), generator=EchoGenerator())
    monkeypatch.delenv("RAGTUNE_API_KEY")
    with serving(app) as url, pytest.raises(RagtuneError, match="401"):
        run(EvalConfig(qa=write_qa(tmp_path / "qa.jsonl"), models="base", url=url),
            show_progress=False)
