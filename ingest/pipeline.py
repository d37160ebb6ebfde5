"""The ingest pipeline: discover, load, split, embed only what is new, store, persist.

Incremental by design (content hashes make re-embedding idempotent, as in simonw/llm):
- a file with the same size and mtime as last time (or the same sha256) is not even re-read
  into chunks: it is "unchanged" and costs no model call;
- a changed file has its chunks replaced in one transaction; chunk texts that were already in
  the index (same content hash) reuse their stored vectors;
- a file gone from the ingested folders loses its chunks (`keep_missing=True` keeps them);
- no duplicates: a document is keyed by its real path, a chunk by (document, content hash), and
  a file whose bytes equal an indexed file's is recorded as a "duplicate" with no chunks;
- a bad file is reported (path + reason) and skipped; if it was indexed before, its old chunks
  are kept and its status becomes "error" until it loads again.
Documents are committed in groups as soon as their vectors exist, so a crash loses at most the
group in flight; FAISS/BM25 are saved at the end and repaired from SQLite on the next open.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ingest.discover import FileFailure, discover
from ingest import loaders
from ingest.loaders import LoadLimits, load_document, max_bytes_from_mb
from ingest.splitter import ChunkDraft, SplitConfig, split_document
from ragtune.errors import ConfigError, InputError
from ragtune.settings import EMBEDDED_EMBEDDER
from retrieval.bm25 import tokenize
from retrieval.index import HybridIndex, write_json_atomic
from retrieval.store import DocumentRecord, NewChunk

log = logging.getLogger(__name__)

GROUP_TEXTS = 1024  # texts embedded (then committed) per group: bounds the work a crash loses


@dataclass
class IngestConfig:
    """What to ingest and how (the resolved values are saved as index/ingest_config.json)."""

    paths: list[Path]
    chunk_size: int = 500
    chunk_overlap: int = 60
    embedder: str = EMBEDDED_EMBEDDER
    keep_missing: bool = False
    batch_size: int = 64
    max_file_mb: float = 50.0
    within: tuple[str, ...] = ()  # confine discovery (symlinks included) to these folders
    max_file_seconds: float = 600.0
    max_html_depth: int = 256
    max_rows: int = 100_000
    max_chunks: int = 20_000
    min_chunk_chars: int = 0
    ocr: bool = True
    ocr_max_pages: int = 50
    ocr_timeout_s: float = 300.0

    @classmethod
    def from_settings(cls, paths: Sequence[Path], settings, **overrides) -> IngestConfig:
        """The config for `paths` with every ingest setting (chunking, per-file limits, OCR) from `settings`."""
        names = ("chunk_size", "chunk_overlap", "embedder", "max_file_mb", "max_file_seconds",
                 "max_html_depth", "max_rows", "max_chunks", "min_chunk_chars", "ocr", "ocr_max_pages",
                 "ocr_timeout_s")
        return cls(paths=list(paths), **{**{n: getattr(settings, n) for n in names}, **overrides})

    def __post_init__(self) -> None:
        """Check the values early, naming the flag and the bad value."""
        if not self.paths:
            raise ConfigError("paths", self.paths, "name at least one file or folder to ingest")
        self.paths = [Path(p) for p in self.paths]
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ConfigError("batch_size", self.batch_size, "must be a positive integer")
        if not self.max_file_mb > 0:
            raise ConfigError("max_file_mb", self.max_file_mb, "must be positive")
        if isinstance(self.max_chunks, bool) or not isinstance(self.max_chunks, int) or self.max_chunks < 1:
            raise ConfigError("max_chunks", self.max_chunks, "must be a positive integer")
        self.split_config()  # validates chunk_size / chunk_overlap / min_chunk_chars
        self.load_limits()  # validates the per-file limits

    def split_config(self) -> SplitConfig:
        return SplitConfig(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap,
                           min_chunk=self.min_chunk_chars)

    def load_limits(self) -> LoadLimits:
        """Fresh per-file limits (the time limit counts from this call: make one per file)."""
        return LoadLimits(max_bytes=max_bytes_from_mb(self.max_file_mb), max_seconds=self.max_file_seconds,
                          max_html_depth=self.max_html_depth, max_rows=self.max_rows, ocr=self.ocr,
                          ocr_max_pages=self.ocr_max_pages, ocr_timeout_s=self.ocr_timeout_s)

    def split_tag(self) -> str:
        """Identifies the chunking and the loader version a document was split with (a change
        means re-reading and re-splitting it)."""
        cfg = self.split_config()
        tag = f"{cfg.chunk_size}/{cfg.chunk_overlap}/{cfg.cjk_width}"
        tag = tag + f"/m{cfg.min_chunk}" if cfg.min_chunk else tag
        return f"{tag}/L{loaders.LOADER_VERSION}"


@dataclass
class IngestReport:
    """What one ingest run did; document lists hold display paths (sources)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    failed: list[FileFailure] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    embedded: int = 0  # texts sent to the embedding model
    reused: int = 0  # chunk texts whose stored vector was reused
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        """The one-line summary printed at the end of `ingest`."""
        line = (f"ingest: {len(self.added)} added, {len(self.updated)} updated, "
                f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, "
                f"{len(self.failed)} failed")
        if self.duplicates:
            line += f", {len(self.duplicates)} duplicate"
        line += (f"; {self.chunks_total} chunks in the index (+{self.chunks_added} "
                 f"-{self.chunks_removed}); ")
        if self.embedded:
            line += f"embedded {self.embedded} chunks ({self.reused} reused)"
        else:
            line += "nothing needed embedding"
        return line + f"; {self.seconds:.1f} s"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["failed"] = [{"path": f.path, "reason": f.reason} for f in self.failed]
        return data


@dataclass
class _Planned:
    """A document that needs its chunks (re)written."""

    record: DocumentRecord
    drafts: list[ChunkDraft]
    hashes: list[str]
    texts: list[str]  # what is embedded and tokenised: section heading + chunk text
    previous: DocumentRecord | None


def failure_reason(err: InputError) -> str:
    """An InputError's reason with its row/field kept ("row 2: invalid JSON ..."), for the failure line."""
    where = ", ".join(p for p in ((f"row {err.row}" if err.row is not None else ""),
                                  (f"field `{err.field}`" if err.field else "")) if p)
    reason = f"{where}: {err.reason}" if where else err.reason
    return f"{reason} ({err.hint})" if err.hint else reason


def quote_name(name: str) -> str:
    """A file name safe on one output line: as-is when plain, else JSON-quoted ("a\\nb.txt").

    Names with control characters (a newline would break the one-line-per-file output), quotes,
    backslashes or edge spaces are quoted, so every failure stays one parseable line.
    """
    plain = name.isprintable() and not any(c in name for c in '"\\') \
        and all(part == part.strip() for part in name.split("/"))
    return name if plain else json.dumps(name, ensure_ascii=False)


def document_key(path: Path) -> str:
    """A document's identity: its real absolute path (symlinks resolved)."""
    return os.path.realpath(path)


def display_source(path: Path) -> str:
    """The path shown to users: relative to the working directory when under it."""
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute, os.getcwd())
    return Path(rel if not rel.startswith("..") else absolute).as_posix()


def embed_text(draft: ChunkDraft) -> str:
    """The text embedded and keyword-indexed for a chunk: its heading path, then the chunk."""
    return f"{draft.section}\n{draft.text}" if draft.section else draft.text


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


class IngestRun:
    """One ingest run against an open index (the caller holds the index's writer lock)."""

    def __init__(self, cfg: IngestConfig, index: HybridIndex, *, progress: bool = True) -> None:
        self.cfg, self.index, self.progress = cfg, index, progress
        self.report = IngestReport()
        self.split_tag = cfg.split_tag()
        self.vectors: dict[str, np.ndarray] = {}  # content hash -> vector known in this run
        self.shas: dict[str, str] = {}  # sha256 -> source of a document indexed in this run
        self.embedded_now: set[str] = set()  # content hashes embedded by this run

    def _bar(self, **kwargs):
        return tqdm(disable=None if self.progress else True, file=sys.stderr, **kwargs)

    def run(self) -> IngestReport:
        started = time.perf_counter()
        files, failures = discover(self.cfg.paths, within=self.cfg.within)
        for failure in failures:
            self._fail(Path(failure.path), failure.reason, only_known=True)
        to_remove = self._missing_documents(files, failures)
        # removals after the commits, so a renamed file's stored vectors are still there to reuse
        self._embed_and_commit(self._plan(files, to_remove))
        self._remove_missing(to_remove)
        self.index.persist(only_if_changed=True)
        self.report.chunks_total = self.index.store.count_chunks()
        self.report.seconds = time.perf_counter() - started
        return self.report

    def _remove_missing(self, to_remove: list[DocumentRecord]) -> None:
        """Drop the chunks of documents that are gone (after the commits, so that a renamed
        file's stored vectors were still there to reuse)."""
        for rec in to_remove:
            self.report.chunks_removed += self.index.remove_document(rec.path, persist=False)
            self.report.removed.append(rec.source)
            log.info("removed %s (file is gone)", rec.source)

    def _missing_documents(self, files: list[Path], failures: list[FileFailure]) -> list:
        """Indexed documents under the ingested folders that discovery no longer finds."""
        if self.cfg.keep_missing:
            return []
        failed = [document_key(Path(f.path)) for f in failures]
        roots = [document_key(p) for p in self.cfg.paths if os.path.exists(p)]
        seen = {document_key(f) for f in files}
        return [rec for rec in self.index.documents()
                if _under(rec.path, roots) and rec.path not in seen and not _under(rec.path, failed)]

    def _plan(self, files: list[Path], to_remove: list[DocumentRecord]) -> Iterator[_Planned]:
        """Classify every discovered file, lazily: load and split those that changed, one at a time.

        Lazy so that only the group being embedded is held in memory and committed before the next
        files are read: a crash loses at most that group.
        """
        removing = {rec.path for rec in to_remove}
        for path in self._bar(iterable=files, desc="files", unit="file"):
            try:
                item = self._plan_file(path, removing)
            except InputError as err:
                self._fail(path, failure_reason(err))
                continue
            except Exception as err:  # a loader bug must not stop the other files
                log.exception("unexpected error while loading %s", path)
                self._fail(path, f"unexpected error ({type(err).__name__}: {err}); see the log")
                continue
            if item is not None:
                yield item

    def _plan_file(self, path: Path, removing: set[str]) -> _Planned | None:
        key, source = document_key(path), display_source(path)
        try:
            st = os.stat(path)
        except OSError as err:
            raise InputError(path, f"unreadable: {err.strerror or err}") from None
        prev = self.index.document(key)
        if (prev is not None and prev.status == "ok" and prev.split == self.split_tag
                and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns):
            return self._unchanged(prev, source, st)
        try:
            sha = file_sha256(path)
        except OSError as err:
            raise InputError(path, f"unreadable: {err.strerror or err}") from None
        if prev is not None and prev.status == "ok" and prev.split == self.split_tag \
                and prev.sha256 == sha:
            return self._unchanged(prev, source, st)
        record = DocumentRecord(path=key, source=source, sha256=sha, mtime_ns=st.st_mtime_ns,
                                size=st.st_size, status="ok", error=None, chunks=0,
                                split=self.split_tag)
        original = self._original_of(sha, key, removing)
        if original is not None:
            self._duplicate(record, prev, original)
            return None
        limits = self.cfg.load_limits()
        doc = load_document(path, limits=limits)
        drafts = self._unique_drafts(split_document(doc, self.cfg.split_config()))
        if not drafts:
            raise InputError(path, "no text to index after splitting")
        if len(drafts) > self.cfg.max_chunks:
            raise InputError(path, f"{len(drafts)} chunks, over the limit of {self.cfg.max_chunks} "
                                   "chunks per document (RAGTUNE_MAX_CHUNKS)")
        limits.check_time(path, "splitting")
        if doc.ocr_pages:
            log.info("%s: %d page(s) read by OCR", source, doc.ocr_pages)
        texts = [embed_text(d) for d in drafts]
        hashes = [content_hash(t) for t in texts]
        self.vectors.update(self.index.embeddings_for(
            [h for h in hashes if h not in self.vectors]))
        self.shas[sha] = source
        record = DocumentRecord(**{**asdict(record), "format": doc.format,
                                   "encoding": doc.encoding, "chunks": len(drafts)})
        return _Planned(record, drafts, hashes, texts, prev)

    def _unchanged(self, prev: DocumentRecord, source: str, st: os.stat_result) -> None:
        if (prev.source, prev.mtime_ns, prev.size) != (source, st.st_mtime_ns, st.st_size):
            self.index.update_record(DocumentRecord(**{
                **asdict(prev), "source": source, "mtime_ns": st.st_mtime_ns, "size": st.st_size}))
        self.shas.setdefault(prev.sha256 or "", source)
        self.report.unchanged.append(source)
        return None

    def _original_of(self, sha: str, key: str, removing: set[str]) -> str | None:
        """The source of another indexed document with these exact bytes, if any."""
        if sha in self.shas:
            return self.shas[sha]
        for rec in self.index.store.iter_documents_with_sha(sha):
            if rec.path != key and rec.path not in removing and os.path.exists(rec.path):
                return rec.source
        return None

    def _duplicate(self, record: DocumentRecord, prev: DocumentRecord | None, original: str) -> None:
        dup = DocumentRecord(**{**asdict(record), "status": "duplicate",
                                "error": f"same content as {original}"})
        if prev is not None and prev.chunks:
            removed, _ = self.index.write_document(dup, [])
            self.report.chunks_removed += removed
        else:
            self.index.update_record(dup)
        self.report.duplicates.append(record.source)
        log.info("%s: same content as %s; not indexed twice", record.source, original)

    @staticmethod
    def _unique_drafts(drafts: list[ChunkDraft]) -> list[ChunkDraft]:
        """Drop repeated chunks within a document (same heading and text), renumbering positions."""
        seen: set[str] = set()
        out: list[ChunkDraft] = []
        for d in drafts:
            h = content_hash(embed_text(d))
            if h not in seen:
                seen.add(h)
                out.append(dataclasses.replace(d, position=len(out)))
        return out

    def _fail(self, path: Path, reason: str, *, only_known: bool = False) -> None:
        """Record a bad file; an indexed document keeps its chunks but is marked as failing."""
        self.report.failed.append(FileFailure(display_source(path), reason))
        log.warning("%s: %s", display_source(path), reason)
        key = document_key(path)
        prev = self.index.document(key)
        if prev is None and only_known:
            return
        base = prev or DocumentRecord(path=key, source=display_source(path), sha256=None,
                                      mtime_ns=None, size=None, status="error", error=None,
                                      chunks=0)
        self.index.update_record(DocumentRecord(**{**asdict(base), "status": "error",
                                                   "error": reason}))

    # -- embedding and committing -------------------------------------------------------
    def _embed_and_commit(self, planned: Iterable[_Planned]) -> None:
        """Embed new texts group by group (length-sorted batches), committing each group."""
        bar = self._bar(desc="embedding", unit="chunk")
        group: list[_Planned] = []
        pending: set[str] = set()
        for item in planned:
            group.append(item)
            pending.update(h for h in item.hashes if h not in self.vectors)
            if len(pending) >= GROUP_TEXTS:
                self._flush(group, bar)
                group, pending = [], set()
        self._flush(group, bar)
        bar.close()

    def _flush(self, group: list[_Planned], bar) -> None:
        todo: dict[str, str] = {}
        for item in group:
            for h, text in zip(item.hashes, item.texts, strict=True):
                if h not in self.vectors:
                    todo.setdefault(h, text)
        self._embed(todo, bar)
        for item in group:
            self._commit(item)

    def _embed(self, todo: dict[str, str], bar) -> None:
        """Embed texts in batches of similar token length (less padding), one bar step a batch."""
        keys = list(todo)
        count = getattr(self.index.embedder, "token_lengths", None)
        lengths = count([todo[h] for h in keys]) if count and keys else [len(todo[h]) for h in keys]
        order = [keys[i] for i in np.argsort(lengths, kind="stable")]
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            vectors = self.index.embedder.embed([todo[h] for h in batch])
            for h, vec in zip(batch, vectors, strict=True):
                self.vectors[h] = np.asarray(vec, dtype=np.float32)
            self.embedded_now.update(batch)
            self.report.embedded += len(batch)
            bar.update(len(batch))

    def _commit(self, item: _Planned) -> None:
        chunks = [NewChunk(position=d.position, section=d.section, text=d.text, content_hash=h,
                           tokens=tokenize(t), embedding=self.vectors[h], page=d.page,
                           row_start=d.row_start, row_end=d.row_end, ocr=d.ocr)
                  for d, h, t in zip(item.drafts, item.hashes, item.texts, strict=True)]
        removed, added = self.index.write_document(item.record, chunks)
        self.report.chunks_removed += removed
        self.report.chunks_added += added
        self.report.reused += sum(h not in self.embedded_now for h in item.hashes)
        previously_indexed = item.previous is not None and item.previous.chunks > 0
        (self.report.updated if previously_indexed else self.report.added).append(
            item.record.source)
        log.info("%s %s: %d chunks", "updated" if previously_indexed else "added",
                 item.record.source, added)


def run_ingest(cfg: IngestConfig, index: HybridIndex, *, progress: bool = True) -> IngestReport:
    """Ingest `cfg.paths` into an open index under its writer lock; returns what was done."""
    with index.writer():
        index.clean_stale_temp_files()
        run = IngestRun(cfg, index, progress=progress)
        report = run.run()
        index.set_ingest_settings({"chunk_size": cfg.chunk_size,
                                   "chunk_overlap": cfg.chunk_overlap})
        write_json_atomic(index.index_dir / "ingest_config.json",
                          {**asdict(cfg), "paths": [str(p) for p in cfg.paths],
                           "embedder_name": index.embedder.name})
        write_json_atomic(index.index_dir / "last_ingest.json", report.to_dict())
    return report


def ingest_documents(paths: Sequence[Path], settings, *, embedder=None,
                     keep_missing: bool = False, batch_size: int = 64,
                     progress: bool = True) -> IngestReport:
    """Ingest into the workspace index of `settings`; the structured entry for chaining steps.

    `embedder` (an Embedder) overrides `settings.embedder`; when neither was set explicitly the
    embedder recorded in an existing index is used (see `retrieval.index.open_index`).
    """
    from retrieval.index import embedder_spec, open_index

    cfg = IngestConfig.from_settings(paths, settings, keep_missing=keep_missing, batch_size=batch_size)
    with open_index(settings, embedder, batch_size=batch_size) as index:
        cfg.embedder = embedder_spec(index.embedder)
        return run_ingest(cfg, index, progress=progress)
