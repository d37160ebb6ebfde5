"""Ingest throughput: ragtune's `ingest` vs LangChain's `FAISS.from_documents`, same corpus, same
model, same loaders and splitter; plus re-ingest of the unchanged corpus vs a full ingest.

    .venv/bin/python bench/bench_ingest.py [--corpus data/docs] [--embedder embedded:all-minilm-l6-v2]
                                           [--repeat 1]

The baseline is what a LangChain user writes: load + split, `FAISS.from_documents` with
LangChain's `HuggingFaceEmbeddings` on the same model directory (batch 64, normalised), then
`save_local`. ragtune additionally keeps a SQLite store, BM25 and the embeddings for repair, and
embeds each chunk with its heading path. Model loading is excluded on both sides; runs alternate
(baseline first, then ragtune first) and the best of `--repeat` counts, as the machine is shared.
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


def langchain_hf_embeddings(embedder, batch_size: int):
    """LangChain's own HuggingFaceEmbeddings over the embedder's model (wrapper as fallback)."""
    location = getattr(embedder, "location", None)
    try:
        from langchain_community.embeddings import HuggingFaceEmbeddings
    except ImportError:
        location = None
    if not location:
        return langchain_embeddings(embedder), "ragtune embedder wrapped as LangChain Embeddings"
    return HuggingFaceEmbeddings(
        model_name=location, model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True, "batch_size": batch_size},
    ), "langchain_community HuggingFaceEmbeddings"


def baseline_ingest(corpus: Path, lc_embeddings, out_dir: Path, chunk_size: int,
                    overlap: int) -> tuple[float, int]:
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
    store = FAISS.from_documents(docs, lc_embeddings)
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
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--chunk-overlap", type=int, default=60)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import logging

    logging.disable(logging.WARNING)
    from retrieval.bm25 import tokenize
    from retrieval.embedders import load_embedder

    embedder = load_embedder(args.embedder)
    lc_embeddings, baseline_kind = langchain_hf_embeddings(embedder, 64)
    embedder.embed(["warm up the model"])
    lc_embeddings.embed_documents(["warm up the model"])
    tokenize("预热结巴词典")  # jieba loads its dictionary once per process (~1 s)
    best_base = best_full = best_again = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs = [lambda i=i: baseline_ingest(args.corpus, lc_embeddings, Path(tmp) / f"lc{i}",
                                                args.chunk_size, args.chunk_overlap),
                    lambda i=i: ragtune_ingest(args.corpus, embedder, Path(tmp) / f"ws{i}",
                                               args.chunk_size, args.chunk_overlap)]
            if i % 2:
                runs.reverse()
            results = [run() for run in runs]
            if i % 2:
                results.reverse()
            (t_base, n_base), (t_full, report) = results
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
    print(f"baseline embeddings: {baseline_kind}")
    print(f"{'run':36} {'chunks':>7} {'seconds':>8} {'chunks/s':>9}")
    for name, n, secs, rate in rows:
        print(f"{name:36} {n:7d} {secs:8.2f} {rate:9.1f}")
    print(f"throughput ratio ragtune / LangChain: {(chunks / best_full) / (n_base / best_base):.2f}x"
          "  (goal >= 1.0x)")
    print(f"full ingest / unchanged re-ingest:   {best_full / best_again:.0f}x  (goal >= 50x)")


if __name__ == "__main__":
    main()
