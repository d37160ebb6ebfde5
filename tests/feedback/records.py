"""Real feedback records for the export tests: answers with retrieved passages, rated and
compared, written through `FeedbackStore` into SQLite."""

from __future__ import annotations

import uuid
from pathlib import Path

from feedback.store import FeedbackStore
from serving.history import Answer, Source

SYSTEM = "You are terse."
FACTS = [("What is the capital?", "The capital is Lumen City.", "The capital is Marrowick."),
         ("Who runs the reactor?", "Aster Labs runs the reactor.", "Nobody runs it."),
         ("Which policy applies?", "Safety policy 7 applies.", "Policy 2 applies."),
         ("员工每年有多少天年假？", "员工每年享有十五天带薪年假。", "员工没有年假。")]


def answer(store: FeedbackStore, question: str, text: str, model: str = "base") -> Answer:
    """Persist one answer grounded in a passage, as the service would."""
    src = Source(1, "handbook.md", 0, "Facts", 1.0, f"Reference for: {question}")
    ans = Answer(str(uuid.uuid4()), question, text, "", [src], model, context="")
    store.record_answer(ans)
    return ans


def fill(db: Path, base_model: str, *, pairs: int = 4, likes: bool = True,
         dislikes: bool = True) -> FeedbackStore:
    """`pairs` A-vs-B choices, plus a like on each good and a dislike on each bad answer."""
    store = FeedbackStore(db, base_model, SYSTEM)
    for i in range(pairs):
        question, good, bad = FACTS[i % len(FACTS)]
        a, b = answer(store, question, good, "tuned"), answer(store, question, bad)
        store.compare(a.id, b.id, question)
        if likes:
            store.rate(a.id, "like")
        if dislikes:
            store.rate(b.id, "dislike", "wrong")
    return store
