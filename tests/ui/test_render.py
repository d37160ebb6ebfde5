"""The chat turn shows the service's final answer and its grounding verdict in words, with the
replacement of a streamed answer taking the place of the streamed text."""

from __future__ import annotations

from ui.client import StreamEvent
from ui.render import Turn, pane_markdown, trust_text


def _done(**result) -> StreamEvent:
    return StreamEvent("done", {"id": "a1", "model": "base", "sources": [], **result})


def test_an_extracted_answer_replaces_the_streamed_text_and_says_it_quotes():
    turn = Turn("How long is the warranty?", "base", True)
    turn.apply(StreamEvent("answer", {"delta": "3 days [1]"}))
    turn.apply(_done(answer='The documents say [2]: "Five years."', answer_kind="extracted",
                     generated="3 days [1]",
                     grounding={"checked": True, "supported": False, "passage": 2,
                                "reason": "3 not in passage [1]"}))
    text = turn.messages()[-1]["content"]
    assert text.startswith('The documents say [2]: "Five years."') and "3 days" not in text
    assert "quoted from passage [2]" in text and "3 not in passage [1]" in text


def test_each_verdict_in_words():
    supported = {"answer_kind": "generated", "grounding": {"checked": True, "supported": True,
                                                           "passage": 1}}
    flagged = {"answer_kind": "generated", "grounding": {"checked": True, "supported": False,
                                                         "reason": "40 not in passage [1]"}}
    refused = {"answer_kind": "refused", "refused": True,
               "grounding": {"checked": False, "reason": "nothing was retrieved"}}
    assert trust_text(supported) == "✅ supported by passage [1]"
    assert trust_text(flagged).startswith("⚠️ not supported") and "40 not in" in trust_text(flagged)
    assert "nothing was retrieved" in trust_text(refused)
    assert trust_text({"answer_kind": "generated", "grounding": {"checked": False}}) == ""
    assert "supported by passage [1]" in pane_markdown("base+RAG", {"answer": "x", **supported})
