"""Real OpenAI clients against ragtune's /v1: openai-python (plain and streamed, with and
without the retrieval extension) and LangChain's ChatOpenAI; DeepSeek-style reasoning."""

from __future__ import annotations

import pytest
from openai import NotFoundError, OpenAI

from api.app import create_app
from tests.fakes import EchoGenerator
from ragtune.prompts import user_prompt
from tests.serving_fixtures import ThinkingGenerator, serving, settings_for

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)

QUESTION = "How many days of annual leave do employees get?"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, retriever):
    app = create_app(settings_for(tmp_path_factory.mktemp("ws")),
                     generator=EchoGenerator(adapters=["tuned"]), retriever=retriever)
    with serving(app) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="module")
def client(base_url):
    return OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def test_openai_client_plain(client) -> None:
    reply = client.chat.completions.create(
        model="tuned", messages=[{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Hello there"}],
        temperature=0.2, presence_penalty=0.5, user="someone")  # unknown fields are ignored
    assert reply.object == "chat.completion" and reply.model == "tuned"
    assert reply.choices[0].index == 0 and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "[tuned] Hello there"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert [m.id for m in client.models.list()] == ["base", "tuned"]


def test_openai_client_streamed(client) -> None:
    chunks = list(client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "one two three"}], stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "[base] one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"
    with_usage = list(client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "one two"}], stream=True,
        stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens > 0


def test_openai_client_with_retrieval_extension(client, retriever) -> None:
    reply = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": QUESTION}],
        extra_body={"ragtune": {"use_rag": True, "top_k": 2}})
    chunks = [h.chunk for h in retriever.search(QUESTION, 2)]
    assert reply.choices[0].message.content == f"[base] {user_prompt(QUESTION, chunks)}"
    sources = reply.model_extra["sources"]
    assert [(s["source"], s["n"]) for s in sources] == [(c.source, i + 1) for i, c in enumerate(chunks)]
    streamed = list(client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": QUESTION}], stream=True,
        extra_body={"use_rag": True, "top_k": 2}))
    assert streamed[0].model_extra["sources"] == sources
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == \
        reply.choices[0].message.content


def test_openai_client_sees_errors(client) -> None:
    with pytest.raises(NotFoundError, match="unknown model 'gpt-4o'"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


def test_langchain_chat_openai(base_url) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=base_url, api_key="unused", model="tuned", max_retries=0)
    assert llm.invoke("Hello from LangChain").content == "[tuned] Hello from LangChain"
    streamed = "".join(chunk.content for chunk in llm.stream("Streaming from LangChain"))
    assert streamed == "[tuned] Streaming from LangChain"


@pytest.mark.parametrize("open_in_prompt", [False, True])
def test_reasoning_is_kept_apart(tmp_path, open_in_prompt: bool) -> None:
    """R1 style: `reasoning` in /ask, `reasoning_content` in messages and stream deltas.

    A generator whose text starts mid-reasoning (the prompt opened `<think>`) is split once
    complete; streamed, only text that opens with `<think>` can be split on the fly (the
    transformers engine and the upstream backend normalise their output to that form)."""
    import httpx

    app = create_app(settings_for(tmp_path), generator=ThinkingGenerator(open_in_prompt))
    with serving(app) as url:
        ask = httpx.post(f"{url}/ask", json={"question": "leave?", "use_rag": False}).json()
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "leave?"}])
        chunks = list(client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "leave?"}], stream=True))
    assert ask["reasoning"] == "The first passage covers it."
    assert ask["answer"] == "Employees get 25 days [1]."
    message = reply.choices[0].message
    assert message.content == ask["answer"]
    assert message.model_extra["reasoning_content"] == ask["reasoning"]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    if not open_in_prompt:
        assert reasoning.strip() == ask["reasoning"] and content.strip() == ask["answer"]
