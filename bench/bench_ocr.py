"""OCR throughput and memory: pages per second and peak RSS of RapidOCR on CPU; ingest throughput of
a corpus with and without OCR (the scanned pages skipped vs read).

    .venv/bin/python bench/bench_ocr.py [--pages 8] [--corpus data/docs] [--embedder embedded:all-minilm-l6-v2]
                                        [--skip-ingest]

OCR pages are the scanned PDFs of the corpus (every page of every image-only PDF, cycled up to
`--pages`), rendered at the loader's resolution; the engine is loaded once before timing. Ingest runs
into fresh temporary workspaces with `ocr` on and off (model loading excluded). Peak memory is the
process's maximum resident set size (ru_maxrss), which includes the embedder and the OCR models.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scanned_pages(corpus: Path) -> list[tuple[Path, int]]:
    """(pdf, 0-based page) for every page of the corpus's PDFs that needs OCR."""
    from pypdf import PdfReader

    from ingest.pdf import _page_lines, needs_ocr

    out = []
    for pdf in sorted(corpus.rglob("*.pdf")):
        for i, page in enumerate(PdfReader(pdf).pages):
            if needs_ocr(_page_lines(page)):
                out.append((pdf, i))
    return out


def bench_ocr(corpus: Path, pages: int) -> dict:
    from ingest.ocr import boxes_to_text, default_engine
    from ingest.pdf import _render

    todo = scanned_pages(corpus)
    if not todo:
        raise SystemExit(f"no scanned PDF pages under {corpus}")
    engine = default_engine()
    images = [_render((pdf).read_bytes(), pdf, i)() for pdf, i in (todo * pages)[:pages]]
    started = time.perf_counter()
    chars = sum(len(boxes_to_text(engine.recognise(image))) for image in images)
    seconds = time.perf_counter() - started
    return {"ocr_pages": len(images), "ocr_seconds": round(seconds, 2),
            "ocr_pages_per_s": round(len(images) / seconds, 3), "ocr_chars": chars,
            "peak_rss_mb_after_ocr": round(peak_mb(), 1)}


def bench_ingest(corpus: Path, embedder_spec: str) -> dict:
    from ingest.pipeline import ingest_documents
    from ragtune.settings import load_settings
    from retrieval.embedders import load_embedder

    embedder = load_embedder(embedder_spec)
    out = {}
    for ocr in (False, True):
        with tempfile.TemporaryDirectory() as ws:
            settings = load_settings(workspace=Path(ws), embedder=embedder_spec, ocr=ocr)
            started = time.perf_counter()
            report = ingest_documents([corpus], settings, embedder=embedder, progress=False)
            seconds = time.perf_counter() - started
        key = "with_ocr" if ocr else "without_ocr"
        out[key] = {"seconds": round(seconds, 2), "documents": len(report.added),
                    "failed": len(report.failed), "chunks": report.chunks_total,
                    "docs_per_s": round(len(report.added) / seconds, 3)}
    out["peak_rss_mb"] = round(peak_mb(), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=8, help="scanned pages to OCR for the pages/s figure")
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "docs")
    parser.add_argument("--embedder", default="embedded:all-minilm-l6-v2")
    parser.add_argument("--skip-ingest", action="store_true", help="only the OCR pages/s and memory")
    args = parser.parse_args(argv)
    result = {"ocr": bench_ocr(args.corpus, args.pages)}
    if not args.skip_ingest:
        result["ingest"] = bench_ingest(args.corpus, args.embedder)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
