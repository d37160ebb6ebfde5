"""The `ingest` command (kept light at import time: the pipeline is imported when it runs)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Literal

from ragtune.settings import load_checked_settings


def ingest(paths: list[Path], workspace: Path | None = None, chunk_size: int | None = None,
           chunk_overlap: int | None = None, embedder: str | None = None,
           keep_missing: bool = False, batch_size: int = 64,
           pairs: Literal["offline", "teacher", "self", "none"] = "offline",
           pairs_config: Path | None = None, local_generator: Any = None) -> int:
    """Ingest documents into the workspace's hybrid (FAISS + BM25) search index.

    Folders recurse; supported files: .txt .md .html .htm .pdf .docx .json .jsonl .csv (text
    encodings are detected), and images .png .jpg .jpeg .tif .tiff
    (read by OCR, as are PDF pages without a text layer). Running it again is incremental: unchanged files embed nothing, a
    changed file has its chunks replaced, and a file that is gone from an ingested folder loses
    its chunks (use --keep_missing to keep them). A file with the same bytes as an indexed one
    is recorded as a duplicate and not indexed twice. A bad file is reported on one line with
    the reason and skipped; if it was indexed before, its previous chunks stay searchable.
    Then the indexed documents are turned into SFT pairs in <workspace>/datasets/ (as
    `ragtune pairs` does; only changed documents get new pairs). Exit code: 0 when every file
    was ingested, 1 when some failed, 2 for a bad flag, 3 when the index was built with
    another embedder.

    Args:
        paths: Files and folders to ingest.
        workspace: Workspace directory (default ./workspace or RAGTUNE_WORKSPACE).
        chunk_size: Chunk size in character cells (a CJK character counts 2; default 500).
        chunk_overlap: Overlap between consecutive chunks (default 60).
        embedder: Embedding model: embedded:all-minilm-l6-v2 (default), a Hugging Face id or a
            local sentence-transformers directory. An existing index keeps its embedder.
        keep_missing: Keep the chunks of files that disappeared from the ingested folders.
        batch_size: Chunks per embedding batch.
        pairs: SFT pair generator run after indexing: offline (default, no model), teacher (an
            OpenAI-compatible endpoint, set in --pairs_config), self (the local generator), or
            none to skip.
        pairs_config: a pairs_config.yaml (see `ragtune pairs --help`) for the pair step.
        local_generator: (not a flag) the local model's loader for `--pairs self`, injected by
            the CLI from the serving core.
    """
    # Imported here, not at module level: the CLI imports every command module at start, and
    # the pipeline brings numpy, FAISS, the loaders and the splitter (no cycle is involved).
    from ingest.pipeline import ingest_documents, quote_name
    from ragtune.logs import setup_logging

    settings = load_checked_settings(workspace=workspace, chunk_size=chunk_size,
                                     chunk_overlap=chunk_overlap, embedder=embedder)
    log_file = setup_logging(settings.paths.logs_dir, "ingest")
    report = ingest_documents(paths, settings, keep_missing=keep_missing, batch_size=batch_size)
    for failure in report.failed:
        print(f"FAILED {quote_name(failure.path)}: {' '.join(failure.reason.split())}")
    print(report.summary())
    if pairs != "none":
        _write_pairs(settings, pairs, pairs_config, local_generator)
    print(f"index: {settings.paths.index_dir}  log: {log_file}", file=sys.stderr)
    return report.exit_code


def _write_pairs(settings, generator: str, config: Path | None,
                 local_generator: Any = None) -> None:
    """Chain the SFT-pair step after indexing (cached per document: only changes cost time)."""
    from ingest.pairs.build import build_pairs  # heavy, as above
    from ingest.pairs.config import PairsConfig
    from retrieval.index import open_index

    cfg = PairsConfig.from_yaml(config) if config else PairsConfig()
    cfg = dataclasses.replace(cfg, generator=generator)
    with open_index(settings, create=False) as index:
        if not index.stats().get("chunks"):
            print("pairs: the index holds no chunks yet; nothing to generate")
            return
        report = build_pairs(settings, index, cfg, local_generator=local_generator)
    print(report.line())
