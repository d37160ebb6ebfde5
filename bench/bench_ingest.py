"""Ingest throughput: ragtune's `ingest` vs LangChain's `FAISS.from_documents`, same corpus, same
embedder object, same loaders and splitter; plus re-ingest of the unchanged corpus vs a full ingest.

    .venv/bin/python bench/bench_ingest.py [--corpus data/docs] [--embedder embedded:all-minilm-l6-v2]
                                           [--repeat 2]

Both sides exclude model loading and take the best of `--repeat` runs (the machine is shared).
The baseline is what a LangChain user writes: load + split, `FAISS.from_documents`, `save_local`.
ragtune additionally keeps a SQLite store, a BM25 index and the embeddings for repair.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def langchain_embeddings(embedder):
    """Wrap a ragtune Embedder as LangChain `Embeddings` (the very same model object)."""
    from langchain_core.embeddings import Embeddings

    class Wrapped(Embeddings):
        def embed_documents(self, texts):
            return embedder.embed(texts).tolist()

        def embed_query(self, text):
            return embedder.embed([text])[0].tolist()

    return Wrapped()


def baseline_ingest(corpus: Path, embedder, out_dir: Path, chunk_size: int, overlap: int) -> tuple[float, int]:
    """Load + split with ragtune's loaders/splitter, then FAISS.from_documents + save_local."""
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document

    from ingest.discover import discover
    from ingest.loaders import load_document, max_bytes_from_mb
    from ingest.splitter import SplitConfig, split_document

    started = time.perf_counter()
    files, _ = discover([corpus])
    cfg = SplitConfig(chunk_size=chunk_size, chunk_overlap=overlap)
    docs = []
    for path in files:
        loaded = load_document(path, max_bytes=max_bytes_from_mb(50))
        for draft in split_document(loaded, cfg):
            docs.append(Document(page_content=draft.text,
                                 metadata={"source": str(path), "section": draft.section}))
    store = FAISS.from_documents(docs, langchain_embeddings(embedder))
    store.save_local(str(out_dir))
    return time.perf_counter() - started, len(docs)


def ragtune_ingest(corpus: Path, embedder, workspace: Path, chunk_size: int, overlap: int):
    from ingest.pipeline import ingest_documents
    from ragtune.settings import load_settings

    settings = load_settings(workspace=workspace, chunk_size=chunk_size, chunk_overlap=overlap)
    started = time.perf_counter()
    report = ingest_documents([corpus], settings, embedder=embedder, progress=False)
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "docs")
    parser.add_argument("--embedder", default="embedded:all-minilm-l6-v2")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--chunk-overlap", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    logging.disable(logging.WARNING)
    from retrieval.bm25 import tokenize
    from retrieval.embedders import load_embedder

    embedder = load_embedder(args.embedder)
    embedder.embed(["warm up the model"])
    tokenize("预热结巴词典")  # jieba loads its dictionary once per process (~1 s)
    best_base = best_full = best_again = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            t_base, n_base = baseline_ingest(args.corpus, embedder, Path(tmp) / f"lc{i}",
                                             args.chunk_size, args.chunk_overlap)
            t_full, report = ragtune_ingest(args.corpus, embedder, Path(tmp) / f"ws{i}",
                                            args.chunk_size, args.chunk_overlap)
            t_again, again = ragtune_ingest(args.corpus, embedder, Path(tmp) / f"ws{i}",
                                            args.chunk_size, args.chunk_overlap)
            assert again.embedded == 0, "re-ingest of an unchanged corpus embedded something"
            best_base, best_full = min(best_base, t_base), min(best_full, t_full)
            best_again = min(best_again, t_again)
    chunks = report.chunks_total
    rows = [
        ("LangChain FAISS.from_documents", n_base, best_base, n_base / best_base),
        ("ragtune ingest (full)", chunks, best_full, chunks / best_full),
        ("ragtune ingest (unchanged, again)", chunks, best_again, chunks / best_again),
    ]
    print(f"corpus {args.corpus} ({len(report.added)} documents), embedder {embedder.name}, "
          f"best of {args.repeat}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'run':36} {'chunks':>7} {'seconds':>8} {'chunks/s':>9}")
    for name, n, secs, rate in rows:
        print(f"{name:36} {n:7d} {secs:8.2f} {rate:9.1f}")
    print(f"throughput ratio ragtune / LangChain: {(chunks / best_full) / (n_base / best_base):.2f}x"
          "  (goal >= 1.0x)")
    print(f"full ingest / unchanged re-ingest:   {best_full / best_again:.0f}x  (goal >= 50x)")


if __name__ == "__main__":
    main()
