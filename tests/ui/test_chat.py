"""Chat and Compare driven through gradio_client against the live UI and API."""

from __future__ import annotations

import pytest
from gradio_client import Client

from tests.ui.conftest import Stack


@pytest.fixture(scope="module")
def client(ui_stack: Stack) -> Client:
    return Client(ui_stack.ui_url, verbose=False)


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def test_chat_streams_answer_with_sources_and_folded_reasoning(client: Client) -> None:
    job = client.submit("How many days of annual leave do employees get?", [], True, 2, "base",
                        64, 0.0, api_name="/chat")
    history, question_box = job.result(timeout=60)
    steps = job.outputs()
    assert question_box == ""
    assert [m["role"] for m in history][:1] == ["user"]
    reasoning = [m for m in history if (m.get("metadata") or {}).get("title")]
    assert len(reasoning) == 1 and "checking passage 1 with base" in _text(reasoning[0])
    assert reasoning[0]["metadata"]["status"] == "done"  # folded away once the answer came
    answer = _text(history[-2])
    assert "Employees get 25 days of annual leave [1]" in answer and "answered by base" in answer
    assert "generation" in answer and "ms" in answer  # the timings line
    sources = _text(history[-1])
    assert "Sources (2)" in sources and "leave.md" in sources and "Annual leave" in sources
    assert "<details" in sources and "25 days of annual leave per calendar year" in sources
    # streamed: the answer grew over several intermediate updates
    partial = [_text(s[0][-2]) for s in steps if len(s[0]) >= 3 and s[0][-2]["role"] == "assistant"]
    assert len(steps) >= 4 and len({p for p in partial}) >= 3


def test_chat_without_rag_has_no_sources_and_uses_the_picked_adapter(client: Client) -> None:
    history, _ = client.predict("How many days of leave?", [], False, 2, "tuned-a", 64, 0.0,
                                api_name="/chat")
    texts = [_text(m) for m in history]
    assert "answered by tuned-a" in texts[-1]
    assert not any("Sources (" in t for t in texts)


def test_chat_keeps_history_and_shows_api_errors_readably(client: Client) -> None:
    first, _ = client.predict("First question?", [], False, 2, "base", 32, 0.0, api_name="/chat")
    history, _ = client.predict("Second?", first, True, 2, "no-such-model", 32, 0.0,
                                api_name="/chat")
    assert len(history) > len(first) and _text(history[len(first)]) == "Second?"
    error = _text(history[-1])
    assert "⚠️" in error and "no-such-model" in error
    assert "Traceback" not in error


def test_model_picker_lists_base_and_adapters(client: Client) -> None:
    dropdown, notice = client.predict("tuned-a", api_name="/models")
    assert [c[0] for c in dropdown["choices"]] == ["base", "tuned-a"]
    assert dropdown["value"] == "tuned-a" and notice == ""
    dropdown, _ = client.predict("gone-adapter", api_name="/models")
    assert dropdown["value"] == "base"


def test_compare_answers_four_ways_with_timings(client: Client) -> None:
    base, base_rag, tuned, tuned_rag = client.predict(
        "How many days of annual leave?", "tuned-a", 2, 64, api_name="/compare")
    assert base.startswith("### Base") and "answered by base" in base
    assert "Sources (" not in base and "Sources (2)" in base_rag and "leave.md" in base_rag
    assert "Tuned (tuned-a)" in tuned and "answered by tuned-a" in tuned
    assert "Sources (2)" in tuned_rag and "answered by tuned-a" in tuned_rag
    for pane in (base, base_rag, tuned, tuned_rag):
        assert "⏱" in pane and "generation" in pane
        assert "<details><summary>🤔 Reasoning" in pane  # reasoning folded away
    assert "retrieval" in base_rag and "retrieval" not in base.split("⏱")[1]


def test_compare_without_an_adapter_says_so(client: Client) -> None:
    base, base_rag, tuned, tuned_rag = client.predict(
        "How many days of annual leave?", None, 2, 64, api_name="/compare")
    assert "answered by base" in base and "answered by base" in base_rag
    assert "No tuned adapter" in tuned and "No tuned adapter" in tuned_rag
