"""Build the SFT dataset from the indexed chunks: generate (cached per document), filter, write.

`build_pairs` is what `ingest` calls at its end and what `ragtune pairs` runs on the stored
index; it never re-reads the document files.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.pairs.base import PairGenerator, QAPair
from ingest.pairs.config import PairsConfig
from ingest.pairs.identity import identity_rows
from ingest.pairs.quality import QualityFilter, load_eval_questions
from ingest.pairs.raft import DistractorPool, rows_for_pairs
from ingest.pairs.store import PairCache, doc_hash, split_pairs, write_dataset
from ragtune.errors import ConfigError, NotFoundError
from ragtune.prompts import system_prompt
from ragtune.settings import Settings
from ragtune.types import Chunk, Generator

GeneratorLoader = Callable[[Settings], Generator]

log = logging.getLogger(__name__)


@dataclass
class PairsReport:
    """What a pair-generation run produced and dropped (the stats line and more)."""

    documents: int = 0
    chunks: int = 0
    pairs: int = 0  # validated question/answer pairs
    train_rows: int = 0
    val_rows: int = 0
    identity_rows: int = 0
    per_document: dict[str, int] = field(default_factory=dict)
    rejected: Counter = field(default_factory=Counter)
    failed_chunks: int = 0
    generated_documents: int = 0
    cached_documents: int = 0
    pruned_cache: int = 0
    eval_questions: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        """One line: pairs, rows, per-document spread, rejections by reason, cache use."""
        counts = sorted(self.per_document.values()) or [0]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        return (f"pairs: {self.pairs} validated from {self.documents} documents / {self.chunks} "
                f"chunks (per document min {counts[0]}, median {statistics.median(counts):g}, "
                f"max {counts[-1]}); rows: train {self.train_rows}, val {self.val_rows}, identity "
                f"{self.identity_rows}; rejected {sum(self.rejected.values())} ({rejected}); "
                f"eval questions checked {self.eval_questions}; failed chunks {self.failed_chunks}; "
                f"documents generated "
                f"{self.generated_documents}, cached {self.cached_documents}; {self.seconds:.1f}s")


def make_generator(settings: Settings, cfg: PairsConfig,
                   local: Generator | GeneratorLoader | None = None) -> PairGenerator:
    """The generator named by `cfg.generator`.

    The `self` generator runs the local model, given as a `Generator` or as a loader called
    with the settings (ingest sits below the serving core, so the caller injects it).
    """
    if cfg.generator == "teacher":
        from ingest.pairs.teacher import TeacherGenerator

        return TeacherGenerator(cfg.teacher_base_url, cfg.teacher_model,
                                settings.paths.cache_dir / "teacher.sqlite",
                                api_key=cfg.teacher_api_key, concurrency=cfg.teacher_concurrency,
                                retries=cfg.teacher_retries, timeout_s=cfg.teacher_timeout_s,
                                temperature=cfg.teacher_temperature,
                                max_pairs=cfg.max_pairs_per_chunk)
    if cfg.generator == "self":
        from ingest.pairs.selfgen import SelfGenerator

        if local is None:
            raise ConfigError("pairs.generator", "self",
                              "the self generator needs the local model: run it through the "
                              "`ingest` or `ragtune pairs` command, or pass local_generator")
        owns = not hasattr(local, "generate")
        if owns:  # a loader: the serving core's `load_generator`, injected by the CLI
            local = local(settings)
        return SelfGenerator(local, settings.generator, max_pairs=cfg.max_pairs_per_chunk,
                             max_new_tokens=cfg.self_max_new_tokens, owns_generator=owns)
    from ingest.pairs.offline import OfflineGenerator

    return OfflineGenerator()


def _chunks_of(index_or_chunks: Any) -> list[Chunk]:
    if hasattr(index_or_chunks, "chunks") and callable(index_or_chunks.chunks):
        return list(index_or_chunks.chunks())
    return list(index_or_chunks)


def _generate(gen: PairGenerator, docs: dict[str, list[Chunk]], cache: PairCache,
              changed: set[str] | None, report: PairsReport) -> dict[int, list[QAPair]]:
    """Pairs per chunk id: cached documents reused, the others generated and cached."""
    from tqdm import tqdm

    result: dict[int, list[QAPair]] = {}
    todo: dict[str, list[Chunk]] = {}
    for source, chunks in docs.items():
        cached = None if changed is not None and source in changed else cache.get(
            doc_hash(chunks))
        if cached is None:
            todo[source] = chunks
            continue
        report.cached_documents += 1
        for c in chunks:
            result[c.id] = cached.get(c.position, [])
    pending = [c for chunks in todo.values() for c in chunks]
    if pending:
        with tqdm(total=len(pending), desc=f"pairs ({gen.name})", unit="chunk",
                  disable=None) as bar:
            fresh = gen.generate(pending, bar.update)
        for source, chunks in todo.items():
            missing = [c for c in chunks if c.id not in fresh]
            report.failed_chunks += len(missing)
            if not missing:
                cache.put(doc_hash(chunks), source, {c.position: fresh[c.id] for c in chunks})
            report.generated_documents += 1
            for c in chunks:
                result[c.id] = fresh.get(c.id, [])
    return result


def _eval_path(name: str) -> Path | None:
    """The eval file, relative to the working directory or else to the source checkout."""
    if not name:
        return None
    path = Path(name)
    if path.is_file():
        return path
    checkout = Path(__file__).resolve().parents[2] / path
    return checkout if not path.is_absolute() and checkout.is_file() else None


def _select(docs: dict[str, list[Chunk]], generated: dict[int, list[QAPair]], cfg: PairsConfig,
            report: PairsReport) -> list[tuple[QAPair, Chunk]]:
    """Run every pair through the quality gate, document by document in a stable order."""
    eval_path = _eval_path(cfg.eval_file)
    eval_qs = load_eval_questions(eval_path) if eval_path else []
    if cfg.eval_file and eval_path is None:
        log.warning("eval file %s not found: the eval-leak check is skipped", cfg.eval_file)
    report.eval_questions = len(eval_qs)
    gate = QualityFilter(cfg, eval_qs)
    kept: list[tuple[QAPair, Chunk]] = []
    for source, chunks in docs.items():
        n = 0
        for chunk in chunks:
            for pair in gate.filter_chunk(chunk, generated.get(chunk.id, [])):
                kept.append((pair, chunk))
                n += 1
        report.per_document[source] = n
    report.rejected = gate.rejected
    return kept


def build_pairs(settings: Settings, index_or_chunks: Any, cfg: PairsConfig | None = None,
                changed_sources: Iterable[str] | None = None, *,
                local_generator: Generator | GeneratorLoader | None = None) -> PairsReport:
    """Generate, filter and write the SFT dataset (and identity pairs) into the workspace.

    `index_or_chunks` is a `HybridIndex` (anything with `.chunks()`) or a list of chunks.
    Documents whose content hash is cached reuse their pairs; `changed_sources` forces those
    documents to be generated again (the teacher still answers repeated prompts from its reply
    cache). Returns the report whose `line()` is the stats line.
    """
    cfg = cfg or PairsConfig()
    start = time.perf_counter()
    chunks = _chunks_of(index_or_chunks)
    if not chunks:
        raise NotFoundError("the index holds no chunks: run `ingest PATH...` first")
    docs: dict[str, list[Chunk]] = defaultdict(list)
    for c in sorted(chunks, key=lambda c: (c.source, c.position)):
        docs[c.source].append(c)
    report = PairsReport(documents=len(docs), chunks=len(chunks))
    gen = make_generator(settings, cfg, local_generator)
    try:
        cache = PairCache(settings.paths.cache_dir, gen.fingerprint)
        generated = _generate(gen, docs, cache, set(changed_sources or ()) or None, report)
        report.pruned_cache = cache.prune({doc_hash(cs) for cs in docs.values()})
    finally:
        gen.close()
    kept = _select(docs, generated, cfg, report)
    report.pairs = len(kept)
    _write(settings, cfg, kept, chunks, report, _searcher(index_or_chunks))
    report.seconds = time.perf_counter() - start
    for source, n in report.per_document.items():
        log.info("pairs per document: %s: %d", source, n)
    log.info("%s", report.line())
    return report


def _searcher(index_or_chunks: Any):
    """The index's hybrid search as `(question, k) -> chunks`, for hard-negative distractors
    (None when pairs are built from a bare list of chunks)."""
    search = getattr(index_or_chunks, "search", None)
    if not callable(search):
        return None
    return lambda question, k: [h.chunk for h in search(question, k, "hybrid")]


def _write(settings: Settings, cfg: PairsConfig, kept: Sequence[tuple[QAPair, Chunk]],
           chunks: Sequence[Chunk], report: PairsReport, search: Any = None) -> None:
    """Rows for the train/validation split and identity pairs, written with their config."""
    system = system_prompt(settings.assistant_name, settings.organisation) if (
        cfg.system_prompt) else None
    pool = DistractorPool(chunks, search, cfg.hard_negatives)
    train, val = split_pairs(kept, cfg.seed, cfg.val_ratio)
    train_rows = rows_for_pairs(train, pool, cfg, system)
    val_rows = rows_for_pairs(val, pool, cfg, system)
    ident = identity_rows(settings.assistant_name, settings.organisation, system) if (
        cfg.identity) else []
    out = settings.paths.datasets_dir
    report.files = write_dataset(out, train_rows, val_rows, ident)
    report.files["config"] = cfg.write_yaml(out / "pairs_config.yaml")
    report.train_rows, report.val_rows, report.identity_rows = (len(train_rows), len(val_rows),
                                                                len(ident))
