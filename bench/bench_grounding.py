"""Serving cost of the grounding check: its time as a share of the answer's latency
(goal: <= 5 %), measured on real answers of the embedded model over the shipped corpus.

    .venv/bin/python bench/bench_grounding.py [--questions 16] [--max-new-tokens 64]
                                              [--workspace workspace] [--model base]

Needs `make demo` (or `ragtune models` + `ingest data/docs`) first: it opens the workspace's
index and generator exactly as `ragtune serve` does and asks the first N questions of
data/eval/qa.jsonl through the Assistant; every answer's timings carry `grounding_ms` next to
`retrieval_ms` and `generation_ms`. The check is then re-run 20 times on the same answers to
time it without the noise of one call. Prints a JSON line with the figures and the ratio.
Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--workspace", type=Path, default=REPO / "workspace")
    parser.add_argument("--model", default="base")
    args = parser.parse_args()

    from evaluation.data import load_qa
    from ragtune.settings import load_settings
    from serving.assistant import Assistant, Params
    from serving.config import AssistantConfig
    from serving.loading import load_generator, load_retriever

    settings = load_settings(workspace=args.workspace)
    retriever, reason = load_retriever(settings)
    if retriever is None:
        sys.exit(f"no index: {reason}")
    assistant = Assistant(load_generator(settings), retriever,
                          AssistantConfig.from_settings(settings, answerable_threshold=0.0))
    items = load_qa(REPO / "data/eval/qa.jsonl", None)[: args.questions]
    answers, totals, checks = [], [], []
    try:
        for item in items:
            prompt = assistant.prepare(item.question)
            answer = assistant.answer(prompt, Params(args.model, args.max_new_tokens))
            t = answer.timings
            totals.append(t["retrieval_ms"] + t["generation_ms"] + t["grounding_ms"])
            answers.append((prompt, answer.generated or answer.answer))
        for prompt, text in answers:
            started = time.perf_counter()
            for _ in range(20):
                assistant.ground(prompt, text)
            checks.append((time.perf_counter() - started) * 1000 / 20)
    finally:
        assistant.generator.close()
    share = [c / tot for c, tot in zip(checks, totals)]
    print(json.dumps({
        "questions": len(items), "max_new_tokens": args.max_new_tokens,
        "answer_ms_p50": round(statistics.median(totals), 1),
        "grounding_ms_p50": round(statistics.median(checks), 3),
        "grounding_ms_max": round(max(checks), 3),
        "grounding_share_p50": round(statistics.median(share), 5),
        "grounding_share_max": round(max(share), 5),
        "goal_share": 0.05, "goal_met": max(share) <= 0.05}))


if __name__ == "__main__":
    main()
