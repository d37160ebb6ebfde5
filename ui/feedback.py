"""Feedback in the UI: 👍/👎 under every chat answer and "this one is better" in Compare.

Both post to the API's `/feedback` (keyed by the answer `id` that /ask returned), which stores
the answer with its question, context and model; `ragtune feedback export` turns the records
into DPO/KTO datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import gradio as gr

from ui.chat import PANES, ChatTab, CompareTab
from ui.client import ApiClient, ApiError

TITLES = {key: title for key, title, _, _ in PANES}
RATINGS = {True: "like", False: "dislike", "Like": "like", "Dislike": "dislike"}


def answer_at(answers: list[dict] | None, index: int | tuple[int, int] | list[int]) -> dict | None:
    """The chat answer that the chatbot message at `index` belongs to (a turn's reasoning,
    answer and sources messages all start at its `message_index`)."""
    i = index[0] if isinstance(index, tuple | list) else int(index)
    owners = [a for a in (answers or []) if a.get("message_index", 0) <= i]
    return max(owners, key=lambda a: a["message_index"]) if owners else None


def rate_fn(client: ApiClient) -> Callable[..., str]:
    """The chatbot `.like` handler: like/dislike (or withdraw) the answer clicked; a notice."""

    def rate(answers: list[dict] | None, data: gr.LikeData) -> str:
        record = answer_at(answers, data.index)
        if record is None or not record.get("id"):
            return "⚠️ this message has no answer id (the answer failed); nothing recorded"
        rating = RATINGS.get(data.liked, "none")  # a thumb clicked off withdraws the rating
        try:
            client.feedback(answer_id=record["id"], rating=rating)
        except ApiError as err:
            return f"⚠️ feedback not recorded: {err}"
        done = {"like": "👍 liked", "dislike": "👎 disliked",
                "none": "rating withdrawn"}[rating]
        return f"{done}: answer of **{record['model']}** to “{record['question']}”"

    return rate


def wire_chat_feedback(client: ApiClient, chat: ChatTab) -> None:
    """Thumbs under every chat answer post a rating for that answer."""
    chat.chatbot.like(rate_fn(client), [chat.answers], [chat.notice], api_name="rate")


@dataclass
class CompareFeedback:
    first: gr.Dropdown
    second: gr.Dropdown
    first_better: gr.Button
    second_better: gr.Button
    notice: gr.Markdown


def prefer_fn(client: ApiClient) -> Callable[[dict | None, str, str, bool], str]:
    """Record that one compare pane's answer is better than another's; a notice."""

    def prefer(results: dict | None, first: str, second: str, first_wins: bool) -> str:
        results = results or {}
        if first == second:
            return "⚠️ pick two different answers"
        missing = [TITLES.get(k, k) for k in (first, second)
                   if not (results.get(k) or {}).get("id")]
        if missing:
            return f"⚠️ no answer yet in: {', '.join(missing)} (press Compare first)"
        chosen, rejected = (first, second) if first_wins else (second, first)
        try:
            client.feedback(chosen_id=results[chosen]["id"], rejected_id=results[rejected]["id"])
        except ApiError as err:
            return f"⚠️ choice not recorded: {err}"
        return f"✅ recorded: **{TITLES[chosen]}** is better than **{TITLES[rejected]}**"

    return prefer


def build_compare_feedback(client: ApiClient, compare: CompareTab) -> CompareFeedback:
    """The "this one is better" row under the compare panes (inside the open Compare tab)."""
    choices = [(title, key) for key, title, _, _ in PANES]
    with gr.Row():
        first = gr.Dropdown(choices, value="base_rag", label="Answer A", elem_id="rt-pref-a")
        second = gr.Dropdown(choices, value="tuned_rag", label="Answer B", elem_id="rt-pref-b")
        first_better = gr.Button("A is better", elem_id="rt-pref-a-better")
        second_better = gr.Button("B is better", elem_id="rt-pref-b-better")
    notice = gr.Markdown(elem_id="rt-pref-notice")
    prefer = prefer_fn(client)

    def a_wins(results: dict | None, a: str, b: str) -> str:
        return prefer(results, a, b, True)

    def b_wins(results: dict | None, a: str, b: str) -> str:
        return prefer(results, a, b, False)

    inputs = [compare.answers, first, second]
    first_better.click(a_wins, inputs, [notice], api_name="prefer_a")
    second_better.click(b_wins, inputs, [notice], api_name="prefer_b")
    return CompareFeedback(first, second, first_better, second_better, notice)

