"""How answers look in the UI: chat messages (reasoning folded away, the answer, its sources
with the chunk text on expand) and the compare panes, built from `/ask` results and events.

Every answer keeps the `id` the API gave it, so feedback buttons can refer to it later.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from ui.client import StreamEvent

REASONING_TITLE = "🤔 Reasoning"
PENDING = "…"


def escape(text: str) -> str:
    return html.escape(text or "", quote=True)


def source_label(source: dict[str, Any]) -> str:
    """`[n] file, p. 12 › section` as shown above a passage (HTML-escaped; page/rows when known)."""
    where = escape(str(source.get("source", "?")))
    if source.get("page") is not None:
        where += f", p. {escape(str(source['page']))}"
    start, end = source.get("row_start"), source.get("row_end")
    if start is not None:
        where += f", row {start}" if end in (None, start) else f", rows {start}-{end}"
    section = source.get("section") or ""
    if section:
        where += f" › {escape(str(section))}"
    if source.get("ocr"):
        where += " (OCR)"
    return f"[{source.get('n', '?')}] {where}"


def sources_html(sources: list[dict[str, Any]]) -> str:
    """The sources block: one line per passage (file, section, score); the chunk on expand."""
    if not sources:
        return ""
    items = []
    for src in sources:
        score = src.get("score")
        score_txt = f"score {float(score):.3f}" if isinstance(score, int | float) else ""
        chunk = escape(str(src.get("text", "")))
        items.append(
            f'<details class="rt-source"><summary><b>{source_label(src)}</b> '
            f'<small>· chunk {src.get("chunk_index", "?")} · {score_txt}</small></summary>'
            f'<div class="rt-chunk" style="white-space: pre-wrap">{chunk}</div></details>')
    return f"<b>Sources ({len(sources)})</b>\n" + "\n".join(items)


def timings_text(result: dict[str, Any]) -> str:
    """`model · 2 sources · retrieval 4 ms · generation 812 ms · 31 tok/s · 25 tokens`."""
    timings = result.get("timings") or {}
    usage = result.get("usage") or {}
    parts = [str(result.get("model", "?"))]
    if "retrieval_ms" in timings and result.get("sources"):
        parts.append(f"retrieval {timings['retrieval_ms']:.0f} ms")
    if "generation_ms" in timings:
        parts.append(f"generation {timings['generation_ms']:.0f} ms")
    if timings.get("tokens_per_s"):
        parts.append(f"{timings['tokens_per_s']:.1f} tok/s")
    if usage.get("completion_tokens") is not None:
        parts.append(f"{usage['completion_tokens']} tokens")
    return " · ".join(parts)


def trust_text(result: dict[str, Any]) -> str:
    """What the grounding check says of an answer, in words for the person reading it."""
    verdict = result.get("grounding") or {}
    kind = result.get("answer_kind")
    if kind == "extracted":
        return (f"🔎 quoted from passage [{verdict.get('passage')}]: the generated answer was not "
                f"supported ({verdict.get('reason') or 'no reason given'})")
    if kind == "refused" or result.get("refused"):
        return f"🤷 not answered: {verdict.get('reason') or 'nothing relevant retrieved'}"
    if not verdict.get("checked"):
        return ""
    if verdict.get("supported"):
        return f"✅ supported by passage [{verdict.get('passage')}]"
    return f"⚠️ not supported by the passages: {verdict.get('reason')}"


@dataclass
class Turn:
    """One answer being streamed into the chat: fed with /ask events, rendered as messages."""

    question: str
    model: str
    use_rag: bool
    id: str = ""
    reasoning: str = ""
    answer: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    done: bool = False

    def apply(self, event: StreamEvent) -> None:
        """Fold one server-sent event into the turn."""
        data = event.data
        if event.kind == "sources":
            self.id = str(data.get("id") or self.id)
            self.sources = list(data.get("sources") or [])
        elif event.kind == "reasoning":
            self.reasoning += str(data.get("delta", ""))
        elif event.kind == "answer":
            self.answer += str(data.get("delta", ""))
        elif event.kind == "done":
            self.done = True
            self.result = data
            self.id = str(data.get("id") or self.id)
            self.answer = str(data.get("answer", self.answer))
            self.reasoning = str(data.get("reasoning", self.reasoning))
            self.sources = list(data.get("sources") or self.sources)

    def fail(self, message: str) -> None:
        self.error, self.done = message, True

    def messages(self) -> list[dict[str, Any]]:
        """Chat messages: reasoning (folded), the answer with its timings, the sources."""
        out: list[dict[str, Any]] = []
        if self.reasoning.strip():
            status = "done" if (self.answer or self.done) else "pending"
            out.append({"role": "assistant", "content": self.reasoning.strip(),
                        "metadata": {"title": REASONING_TITLE, "status": status}})
        text = self.answer.strip() or ("" if self.done else PENDING)
        if self.error:
            prefix = text + "\n\n" if text and text != PENDING else ""
            text = prefix + f"⚠️ **Error:** {self.error}"
        elif self.done:
            trust = trust_text(self.result)
            footer = (f"\n\n<sub>{escape(trust)}</sub>" if trust else "") + \
                f"\n\n<sub>{escape(timings_text(self.result))}</sub>"
            text = (text or "_(empty answer)_") + footer
        out.append({"role": "assistant", "content": text})
        if self.sources:
            out.append({"role": "assistant", "content": sources_html(self.sources)})
        return out

    def record(self, message_index: int) -> dict[str, Any]:
        """What the UI remembers about this answer (for feedback: id, question, model...)."""
        return {"id": self.id, "question": self.question, "model": self.model,
                "use_rag": self.use_rag, "answer": self.answer, "message_index": message_index,
                "error": self.error}


def pane_markdown(title: str, result: dict[str, Any] | None, error: str = "") -> str:
    """One compare pane: heading, answer, folded reasoning, sources and timings."""
    head = f"### {title}\n\n"
    if error:
        return head + f"⚠️ {error}"
    if result is None:
        return head + "_waiting…_"
    body = (result.get("answer") or "").strip() or "_(empty answer)_"
    if (result.get("reasoning") or "").strip():
        body = (f"<details><summary>{REASONING_TITLE}</summary>\n\n"
                f"{escape(result['reasoning'].strip())}\n\n</details>\n\n{body}")
    parts = [head + body]
    if result.get("sources"):
        parts.append(sources_html(result["sources"]))
    if trust_text(result):
        parts.append(f"<sub>{escape(trust_text(result))}</sub>")
    parts.append(f"<sub>⏱ {escape(timings_text(result))}</sub>")
    return "\n\n".join(parts)
