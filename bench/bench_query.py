"""Query latency p50/p95 for dense, BM25 and hybrid search at 10,000 chunks (goal: hybrid p50
<= 20 ms on the 2-core machine), against LangChain's FAISS vector store on the same vectors; plus
retrieval quality (hit@5, MRR) of each mode on the shipped corpus and its eval questions.

    .venv/bin/python bench/bench_query.py [--chunks 10000] [--embedder embedded:all-minilm-l6-v2]
                                          [--torch-threads 1]

The shipped corpus (data/docs) is ingested with the real embedder; it is then grown to `--chunks`
with synthetic chunks made by recombining its sentences (vectors: the source chunk's vector plus
noise), so BM25 postings and vector geometry stay realistic. Queries are data/eval/qa.jsonl
(English and Chinese); every search includes embedding the query with the real model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODES = ("dense", "bm25", "hybrid")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def quality(index, questions: list[dict], corpus_prefix: str) -> dict[tuple[str, str], tuple]:
    """(hit@5, MRR@5, n) per (mode, language) over the answerable eval questions."""
    from ragtune.prompts import is_chinese

    out = {}
    answerable = [q for q in questions if q.get("source")]
    for mode in MODES:
        for lang in ("en", "zh"):
            subset = [q for q in answerable if is_chinese(q["question"]) == (lang == "zh")]
            hits, rr = 0, 0.0
            for q in subset:
                sources = [h.chunk.source for h in index.search(q["question"], k=5, mode=mode)]
                target = f"{corpus_prefix}/{q['source']}"
                if target in sources:
                    hits += 1
                    rr += 1 / (sources.index(target) + 1)
            out[mode, lang] = (hits / max(len(subset), 1), rr / max(len(subset), 1), len(subset))
    return out


def grow(index, target: int, seed: int = 0) -> int:
    """Add synthetic documents (recombined sentences, perturbed vectors) until `target` chunks."""
    from retrieval.bm25 import tokenize
    from retrieval.store import DocumentRecord, NewChunk

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    base = index.chunks()
    _, vectors = index.store.embeddings([c.id for c in base], index.embedder.dim)
    sentences = [[s for s in re.split(r"(?<=[.!?。！？])\s*", c.text) if s] for c in base]
    n, doc_no = index.store.count_chunks(), 0
    while n < target:
        chunks = []
        for pos in range(min(20, target - n)):
            i = rng.randrange(len(base))
            picks = rng.sample(sentences[i], k=min(len(sentences[i]), 3)) or [base[i].text]
            text = " ".join(picks) + f" (variant {doc_no}-{pos})"
            vec = vectors[i] + noise.normal(0, 0.25 / np.sqrt(len(vectors[i])), len(vectors[i]))
            vec = (vec / np.linalg.norm(vec)).astype(np.float32)
            chunks.append(NewChunk(pos, base[i].section, text, f"synthetic-{doc_no}-{pos}",
                                   tokenize(text), vec))
        record = DocumentRecord(path=f"/synthetic/doc-{doc_no}.md", source=f"synthetic/doc-{doc_no}.md",
                                sha256=None, mtime_ns=None, size=None, status="ok", error=None,
                                chunks=len(chunks), split="synthetic")
        n += index.write_document(record, chunks)[1]
        doc_no += 1
    index.persist()
    return n


def latency(fn, queries: list[str], warmup: int = 5) -> list[float]:
    for i in range(warmup):  # distinct strings: the index caches query vectors
        fn(f"warm-up query number {i} about {queries[i % len(queries)]}")
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - started)
    return times


def langchain_store(index):
    """LangChain's FAISS vector store over exactly the same texts and vectors."""
    from langchain_community.vectorstores import FAISS

    from bench.bench_ingest import langchain_embeddings

    chunks = index.chunks()
    _, vectors = index.store.embeddings([c.id for c in chunks], index.embedder.dim)
    pairs = [(c.text, v.tolist()) for c, v in zip(chunks, vectors, strict=True)]
    return FAISS.from_embeddings(pairs, langchain_embeddings(index.embedder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "docs")
    parser.add_argument("--questions", type=Path, default=REPO / "data" / "eval" / "qa.jsonl")
    parser.add_argument("--embedder", default="embedded:all-minilm-l6-v2")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads for the query embedding (0: torch's default); one "
                             "query is a tiny forward pass that extra threads slow down on a busy "
                             "2-core machine (measured 65 ms with 1 thread vs 1100 ms with 2)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    import torch

    logging.disable(logging.WARNING)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from ingest.pipeline import ingest_documents
    from ragtune.settings import load_settings
    from retrieval.embedders import load_embedder
    from retrieval.index import open_index

    embedder = load_embedder(args.embedder)
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line]
    queries = [q["question"] for q in questions]
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(args.corpus.parent)
        settings = load_settings(workspace=Path(tmp))
        started = time.perf_counter()
        ingest_documents([Path(args.corpus.name)], settings, embedder=embedder, progress=False)
        ingest_s = time.perf_counter() - started
        with open_index(settings, embedder) as index:
            scores = quality(index, questions, args.corpus.name)
            total = grow(index, args.chunks)
        with open_index(settings, embedder) as index:  # reopen: load the saved files, as a server does
            runs = {}
            for mode in MODES:
                index._query_cache.clear()  # measure each mode with the query embedding
                runs[mode] = latency(lambda q, m=mode: index.search(q, k=5, mode=m), queries)
            runs["hybrid, query vector cached"] = latency(lambda q: index.search(q, k=5), queries)
            runs["query embedding only"] = latency(lambda q: embedder.embed([q]), queries)
            store = langchain_store(index)
            runs["LangChain FAISS similarity_search"] = latency(
                lambda q: store.similarity_search(q, k=5), queries)
    print(f"{total} chunks ({args.corpus} ingested in {ingest_s:.0f} s, then grown), "
          f"{len(queries)} queries, embedder {embedder.name}, torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'search':36} {'p50 ms':>8} {'p95 ms':>8}")
    for name, times in runs.items():
        print(f"{name:36} {percentile(times, 50):8.1f} {percentile(times, 95):8.1f}")
    lc50 = statistics.median(runs["LangChain FAISS similarity_search"])
    print(f"dense p50 ragtune / LangChain: {statistics.median(runs['dense']) / lc50:.2f}x; "
          f"hybrid p50 {percentile(runs['hybrid'], 50):.1f} ms (goal <= 20 ms)")
    print(f"quality on {args.corpus.name} ({sum(1 for q in questions if q.get('source'))} "
          "answerable questions):")
    for (mode, lang), (hit, mrr, n) in scores.items():
        print(f"  {mode:7} {lang} ({n:3d})  hit@5 {hit:.2f}  MRR@5 {mrr:.2f}")


if __name__ == "__main__":
    main()
