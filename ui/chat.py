"""The Chat and Compare tabs: streamed answers with a RAG toggle, top_k and a model picker;
one question answered by base, base+RAG, tuned and tuned+RAG side by side.

Each tab returns its components in a dataclass, so later features (like/dislike, "A is
better") attach to them; every answer's API `id` is kept in a `gr.State`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.client import ApiClient, ApiError
from ui.render import Turn, pane_markdown

NO_ADAPTER = ("No tuned adapter is being served yet. Train one in the **Fine-tune** tab, then "
              "restart the API (or press ↻ if it already lists it) and pick it here.")


def model_choices(client: ApiClient) -> tuple[list[str], str]:
    """`(models, notice)`: what the API serves, or ["base"] and the reason it could not say."""
    try:
        return client.models() or ["base"], ""
    except ApiError as err:
        return ["base"], f"⚠️ {err}"


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    question: gr.Textbox
    send: gr.Button
    use_rag: gr.Checkbox
    top_k: gr.Slider
    model: gr.Dropdown
    refresh: gr.Button
    max_new_tokens: gr.Slider
    temperature: gr.Slider
    answers: gr.State  # list of Turn.record() dicts, one per answer (id, question, model...)
    notice: gr.Markdown


def chat_fn(client: ApiClient) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The streaming chat handler: yields (history, answers, question box) as tokens arrive."""

    def respond(question: str, history: list[dict] | None, answers: list[dict] | None,
                use_rag: bool, top_k: float, model: str | None, max_new_tokens: float,
                temperature: float) -> Iterator[tuple[Any, ...]]:
        history, answers = list(history or []), list(answers or [])
        question = (question or "").strip()
        if not question:
            yield history, answers, ""
            return
        history.append({"role": "user", "content": question})
        turn = Turn(question, model or "base", bool(use_rag))
        yield history + turn.messages(), answers, ""
        try:
            for event in client.ask_stream(question, use_rag=bool(use_rag), top_k=int(top_k),
                                           model=model or None,
                                           max_new_tokens=int(max_new_tokens),
                                           temperature=float(temperature)):
                turn.apply(event)
                yield history + turn.messages(), answers, ""
        except ApiError as err:
            turn.fail(str(err))
        if not turn.done:
            turn.fail("the answer stream ended early; see the API log")
        answers.append(turn.record(len(history)))
        yield history + turn.messages(), answers, ""

    return respond


def build_chat_tab(client: ApiClient, default_top_k: int, max_top_k: int,
                   default_max_new_tokens: int) -> ChatTab:
    """The Chat tab's layout and events (inside an open `gr.Tab`)."""
    with gr.Row():
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(label="Assistant", height=520, elem_id="rt-chatbot",
                                 buttons=["copy"], feedback_options=("Like", "Dislike"))
            with gr.Row():
                question = gr.Textbox(placeholder="Ask a question about your documents…",
                                      show_label=False, scale=6, elem_id="rt-question",
                                      submit_btn=False)
                send = gr.Button("Ask", variant="primary", scale=1, elem_id="rt-send")
            notice = gr.Markdown(elem_id="rt-chat-notice")
        with gr.Column(scale=1, min_width=220):
            use_rag = gr.Checkbox(True, label="Use RAG (answer from the documents)",
                                  elem_id="rt-use-rag")
            top_k = gr.Slider(1, max_top_k, value=default_top_k, step=1, label="top_k passages")
            with gr.Row():
                model = gr.Dropdown(["base"], value="base", label="Model", scale=4,
                                    elem_id="rt-model", allow_custom_value=True)
                refresh = gr.Button("↻", scale=1, min_width=40)
            with gr.Accordion("Generation", open=False):
                max_new_tokens = gr.Slider(16, 2048, value=default_max_new_tokens, step=16,
                                           label="max_new_tokens")
                temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature")
            clear = gr.Button("Clear chat")
    answers = gr.State([])
    tab = ChatTab(chatbot, question, send, use_rag, top_k, model, refresh, max_new_tokens,
                  temperature, answers, notice)
    inputs = [question, chatbot, answers, use_rag, top_k, model, max_new_tokens, temperature]
    outputs = [chatbot, answers, question]
    respond = chat_fn(client)
    send.click(respond, inputs, outputs, api_name="chat")
    question.submit(respond, inputs, outputs, api_name=False)
    clear.click(lambda: ([], []), None, [chatbot, answers], api_name=False)
    return tab


def refresh_models_fn(client: ApiClient) -> Callable[[str | None], tuple[Any, str]]:
    """Handler that refills a model dropdown from /v1/models, keeping the current choice."""

    def refresh(current: str | None) -> tuple[Any, str]:
        models, notice = model_choices(client)
        value = current if current in models else models[0]
        return gr.update(choices=models, value=value), notice

    return refresh


@dataclass
class CompareTab:
    question: gr.Textbox
    adapter: gr.Dropdown
    top_k: gr.Slider
    max_new_tokens: gr.Slider
    run: gr.Button
    refresh: gr.Button
    panes: dict[str, gr.Markdown]  # keys: base, base_rag, tuned, tuned_rag
    answers: gr.State  # {pane key: /ask result (with its id)}
    notice: gr.Markdown


PANES = (("base", "Base", False, False), ("base_rag", "Base + RAG", False, True),
         ("tuned", "Tuned", True, False), ("tuned_rag", "Tuned + RAG", True, True))


def compare_fn(client: ApiClient) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """The compare handler: four /ask calls at once; each pane fills in as its answer comes."""

    def compare(question: str, adapter: str | None, top_k: float,
                max_new_tokens: float) -> Iterator[tuple[Any, ...]]:
        question = (question or "").strip()
        results: dict[str, dict] = {}
        errors: dict[str, str] = {}
        if not question:
            yield (*[pane_markdown(t, None, "type a question first") for _, t, _, _ in PANES], {})
            return
        tuned = adapter if adapter and adapter != "base" else None
        titles = {key: (f"{title} ({tuned})" if is_tuned and tuned else title)
                  for key, title, is_tuned, _ in PANES}
        for key, _, is_tuned, _ in PANES:
            if is_tuned and tuned is None:
                errors[key] = NO_ADAPTER

        def panes() -> tuple[Any, ...]:
            return (*[pane_markdown(titles[k], results.get(k), errors.get(k, ""))
                      for k, _, _, _ in PANES], dict(results))

        yield panes()
        jobs = [(key, tuned if is_tuned else "base", rag) for key, _, is_tuned, rag in PANES
                if key not in errors]
        visitor = client.bound()  # the pool's threads do not see the visitor's request
        with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
            futures = {pool.submit(visitor.ask, question, use_rag=rag, top_k=int(top_k),
                                   model=model, max_new_tokens=int(max_new_tokens)): key
                       for key, model, rag in jobs}
            for future in as_completed(futures):
                key = futures[future]
                try:
                    results[key] = future.result()
                except ApiError as err:
                    errors[key] = str(err)
                yield panes()

    return compare


def build_compare_tab(client: ApiClient, default_top_k: int, max_top_k: int,
                      default_max_new_tokens: int) -> CompareTab:
    """The Compare tab's layout and events (inside an open `gr.Tab`)."""
    with gr.Row():
        question = gr.Textbox(label="Question", scale=5, elem_id="rt-compare-question")
        adapter = gr.Dropdown([], value=None, label="Tuned adapter", scale=2,
                              elem_id="rt-compare-adapter", allow_custom_value=True)
        refresh = gr.Button("↻", scale=0, min_width=40)
    with gr.Row():
        top_k = gr.Slider(1, max_top_k, value=default_top_k, step=1, label="top_k (RAG panes)")
        max_new_tokens = gr.Slider(16, 2048, value=default_max_new_tokens, step=16,
                                   label="max_new_tokens")
        run = gr.Button("Compare", variant="primary", elem_id="rt-compare")
    notice = gr.Markdown()
    with gr.Row(equal_height=False):
        panes = {key: gr.Markdown(f"### {title}", elem_id=f"rt-pane-{key}", container=True)
                 for key, title, _, _ in PANES}
    answers = gr.State({})
    tab = CompareTab(question, adapter, top_k, max_new_tokens, run, refresh, panes, answers,
                     notice)
    outputs = [*panes.values(), answers]
    inputs = [question, adapter, top_k, max_new_tokens]
    run.click(compare_fn(client), inputs, outputs, api_name="compare")
    question.submit(compare_fn(client), inputs, outputs, api_name=False)
    return tab


def refresh_adapters_fn(client: ApiClient) -> Callable[[str | None], tuple[Any, str]]:
    """Handler that refills the tuned-adapter dropdown (everything but "base")."""

    def refresh(current: str | None) -> tuple[Any, str]:
        models, notice = model_choices(client)
        adapters = [m for m in models if m != "base"]
        value = current if current in adapters else (adapters[0] if adapters else None)
        if not adapters and not notice:
            notice = NO_ADAPTER
        return gr.update(choices=adapters, value=value), notice

    return refresh
