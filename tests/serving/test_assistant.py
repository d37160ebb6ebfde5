"""The Assistant without HTTP: prompts in the training layout for chats too, refusal
configurable, citations, and the bounded store of recent answers."""

from __future__ import annotations

import pytest

from serving.assistant import Assistant, Params
from serving.config import AssistantConfig
from serving.history import AnswerStore
from ragtune.errors import ConfigError, NotFoundError
from tests.fakes import EchoGenerator
from ragtune.prompts import system_prompt, user_prompt

QUESTION = "How many days of annual leave do employees get?"


def test_chat_history_keeps_earlier_turns_and_puts_passages_in_the_last_question(retriever):
    assistant = Assistant(EchoGenerator(), retriever, AssistantConfig(top_k=2))
    history = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
               {"role": "user", "content": QUESTION}]
    prompt = assistant.prepare(QUESTION, history=history)
    chunks = [h.chunk for h in retriever.search(QUESTION, 2)]
    assert prompt.messages == [{"role": "system", "content": system_prompt()}, *history[:2],
                               {"role": "user", "content": user_prompt(QUESTION, chunks)}]
    assert history[-1]["content"] == QUESTION  # the caller's list is not modified
    assert prompt.context.startswith("[1] handbook/leave.md › Leave\n")


def test_refusal_can_be_switched_off(retriever):
    strict = Assistant(EchoGenerator(), retriever, AssistantConfig(relevance_threshold=2.0))
    lenient = Assistant(EchoGenerator(), retriever, AssistantConfig(
        relevance_threshold=2.0, refuse_without_context=False))
    assert strict.ask(QUESTION).refused
    answer = lenient.ask(QUESTION)
    assert not answer.refused and answer.answer == f"[base] {QUESTION}" and not answer.sources


def test_citations_are_the_markers_that_point_at_sources(retriever):
    gen = EchoGenerator(reply="It is 25 days [1], see also [2] and [9].")
    flag = AssistantConfig(top_k=2, on_unsupported="flag")  # [9] fails the check: keep the text
    answer = Assistant(gen, retriever, flag).ask(QUESTION)
    assert answer.citations == [1, 2]
    streamed = list(Assistant(gen, retriever, flag).answer_stream(
        Assistant(gen, retriever).prepare(QUESTION, top_k=2), Params()))
    assert streamed[-1][0] == "done" and streamed[-1][1].citations == [1, 2]
    assert "".join(v for k, v in streamed if k == "answer") == streamed[-1][1].answer


def test_store_keeps_the_most_recent_answers(retriever):
    store = AnswerStore(capacity=2)
    assistant = Assistant(EchoGenerator(), retriever, store=store)
    first, second, third = (assistant.ask(f"q{i}", use_rag=False) for i in range(3))
    assert first.id not in store and len(store) == 2
    assert store.get(third.id).question == "q2" and store.recent(1) == [third]
    with pytest.raises(NotFoundError, match="last 2 answers"):
        store.get(first.id)
    assert second.id in store


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="search_mode"):
        AssistantConfig(search_mode="fuzzy")
    with pytest.raises(ConfigError, match="top_k"):
        AssistantConfig(top_k=0)


def test_rag_requests_guard_against_copying_the_context_list(retriever):
    """A tuned model continued the context list ("[5] docs/x.html › Chapter 7 …"): RAG replies
    may not open with "[", and stop where a line starts a passage header; quote lines
    (`[n]: "…"`) and plain chats are untouched."""
    assistant = Assistant(EchoGenerator(), retriever, AssistantConfig(top_k=2))
    prompt = assistant.prepare(QUESTION)
    request = assistant.request(prompt, Params(stop=["###"]))
    assert request.banned_openings == ("[",)
    assert request.stop[0] == "###" and "\n[1] " in request.stop and "\n[3] " in request.stop
    assert not any(s.startswith("\n[1]:") for s in request.stop)
    plain = assistant.request(assistant.prepare(QUESTION, use_rag=False), Params())
    assert plain.banned_openings == () and plain.stop == []
    off = Assistant(EchoGenerator(), retriever, AssistantConfig(top_k=2,
                                                                context_echo_guard=False))
    unguarded = off.request(off.prepare(QUESTION), Params())
    assert unguarded.banned_openings == () and unguarded.stop == []
