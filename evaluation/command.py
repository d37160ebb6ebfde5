"""The `ragtune eval` entry function (light at import time: heavy imports happen inside)."""

from __future__ import annotations

from pathlib import Path


def evaluate(qa: Path = Path("data/eval/qa.jsonl"), model: str = "base,latest",
             url: str | None = None, json: bool = False, workspace: Path | None = None,
             k: int = 5, top_k: int = 4, limit: int | None = None, max_new_tokens: int = 64,
             modes: str = "dense,bm25,hybrid", reranker: str | None = None,
             batch_size: int = 16, calibrate: bool = False, replay: Path | None = None) -> int:
    """Measure what tuning and retrieval buy: base, base+RAG, tuned, tuned+RAG, and retrieval.

    Every question of QA goes through each model without and with retrieval (through the
    service's batched engine, or a live server's /ask with --url). Answer metrics: exact
    match, token F1 (characters for Chinese), containment of the reference, ROUGE-L, refusal
    rate (a refusal is the right answer to an unanswerable question) and citation correctness.
    Retrieval: hit@k, recall@k and MRR of the expected source for dense, BM25, hybrid, and
    hybrid + a cross-encoder reranker when one is available offline. Questions that appear in
    the training datasets stop the eval, naming the colliding rows. Results go to
    <workspace>/evals/<timestamp>/ (results.json, results.csv, answers.jsonl, chart.png,
    config.yaml).

    Args:
        qa: eval questions, JSON lines {"question", "answer" (null: unanswerable), "source"}.
        model: comma-separated models: base, tuned run names, latest (the newest run).
        url: a running ragtune server (e.g. http://127.0.0.1:8000) to ask instead of loading models.
        json: print the results as JSON on stdout instead of tables.
        workspace: workspace directory (default: settings).
        k: depth of the retrieval metrics (hit@k, recall@k, MRR).
        top_k: passages in the +RAG prompts (as /ask's default, and the RAFT training rows).
        limit: evaluate only the first N questions.
        max_new_tokens: answer length cap.
        modes: retrieval ablation modes, comma-separated ("" skips the ablation).
        reranker: a cross-encoder directory or cached Hugging Face id (default: search the cache).
        batch_size: questions per engine call.
        calibrate: first fit the "nothing relevant was found" gate on QA's answerable and
            unanswerable questions and write it beside the index (serving uses it); the eval
            then runs with it.
        replay: an earlier eval folder (or its answers.jsonl): put its model texts through
            today's retrieval, gate and grounding check instead of generating (seconds, not
            minutes: what a change of the check does to the answers users get).
    """
    import json as jsonlib
    import sys

    from evaluation.run import run
    from evaluation.evaluate import EvalConfig

    cfg = EvalConfig(qa=qa, models=model, k=k, top_k=top_k, modes=modes, reranker=reranker,
                     max_new_tokens=max_new_tokens, batch_size=batch_size, url=url,
                     limit=limit, json=json, workspace=workspace, calibrate=calibrate,
                     replay=replay)
    result, out_dir = run(cfg)
    if json:
        print(jsonlib.dumps({**result.to_dict(), "output_dir": str(out_dir)}, ensure_ascii=False,
                            indent=2))
        return 0
    from rich.console import Console

    from evaluation.report import render_tables

    # Piped or redirected output gets a fixed width wide enough for every column.
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
    console.print(render_tables(result.configurations, result.retrieval, result.k, result.notes))
    print(f"results, answers and chart in {out_dir}", flush=True)
    return 0
