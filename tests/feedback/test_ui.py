"""Feedback from the UI: 👍/👎 on chat answers (the chatbot's like handler) and "A is better"
in Compare (through gradio_client), recorded by the live API."""

from __future__ import annotations

import os
from collections.abc import Iterator

import gradio as gr
import pytest

from tests.feedback.conftest import KEY, LiveApi, start_api
from ui.chat import chat_fn
from ui.client import ApiClient
from ui.feedback import answer_at, rate_fn

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
QUESTION = "How many days of annual leave do employees get?"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveApi, str]]:
    """The live API and the Gradio UI launched against it (both on loopback)."""
    from ragtune.settings import load_settings
    from ui.app import build_ui, launch_options
    from ui.auth import Visitors
    from ui.serving import free_port

    ws = tmp_path_factory.mktemp("fb-ui") / "ws"
    api = start_api(ws)
    visitors = Visitors(api.url)  # the API has a key: visitors sign in with it
    demo = build_ui(load_settings(workspace=ws, api_url=api.url), root=ws, visitors=visitors)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), ssr_mode=False, quiet=True,
                            auth=visitors.login, **launch_options())
    try:
        yield api, url.rstrip("/")
    finally:
        demo.close()
        api.server.stop()


def like(index: int, liked: bool | str) -> gr.LikeData:
    return gr.LikeData(None, {"index": index, "value": "…", "liked": liked})


def test_thumbs_under_chat_answers_rate_the_right_answer(stack) -> None:
    api, _ = stack
    client = ApiClient(api.url, KEY)
    history, answers = [], []
    for question, model in ((QUESTION, "base"), ("When is the reactor inspected?", "tuned")):
        *_, (history, answers, _) = chat_fn(client)(question, history, answers, True, 2, model,
                                                   32, 0.0)
    second = answers[1]
    assert answer_at(answers, len(history) - 1) is second  # its sources message
    assert answer_at(answers, second["message_index"] - 2) is answers[0]
    rate = rate_fn(client)
    notice = rate(answers, like(len(history) - 1, False))
    assert notice.startswith("👎 disliked") and "tuned" in notice
    assert rate(answers, like(answers[0]["message_index"], True)).startswith("👍 liked")
    stats = client.feedback_stats()
    assert (stats["likes"], stats["dislikes"]) == (1, 1)
    assert {r["model"]: (r["likes"], r["dislikes"]) for r in stats["by_model"]} == {
        "base": (1, 0), "tuned": (0, 1)}
    assert "withdrawn" in rate(answers, like(len(history) - 1, ""))
    assert client.feedback_stats()["dislikes"] == 0
    failed = [{"id": "", "question": "q", "model": "base", "message_index": 0}]
    assert "nothing recorded" in rate(failed, like(0, True))


def test_compare_view_records_which_answer_is_better(stack) -> None:
    from gradio_client import Client

    api, url = stack
    ui = Client(url, auth=("tester", KEY), verbose=False)
    panes = ui.predict(QUESTION, "tuned", 2, 32, api_name="/compare")
    assert any("[tuned]" in str(p) for p in panes) and any("[base]" in str(p) for p in panes)
    assert "✅ recorded: **Tuned + RAG** is better than **Base + RAG**" == ui.predict(
        "base_rag", "tuned_rag", api_name="/prefer_b")
    assert "pick two different" in ui.predict("base", "base", api_name="/prefer_a")
    stats = ApiClient(api.url, KEY).feedback_stats()
    assert stats["comparisons"] == 1 and stats["wins"] == {"tuned": 1}
    fresh = Client(url, auth=("tester", KEY), verbose=False)  # a new session has no compare answers yet
    assert "press Compare first" in fresh.predict("base", "tuned", api_name="/prefer_a")
