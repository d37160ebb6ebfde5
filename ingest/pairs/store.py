"""Per-document pair cache and the dataset writer (alpaca JSON + dataset_info.json).

Pairs are cached per document content hash and generator fingerprint, so a rerun generates
pairs only for documents that changed; documents that are gone lose their cache entries. All
files are written to a temporary name and renamed, so a crash never leaves a torn dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ingest.pairs.base import QAPair
from ragtune.types import Chunk

SFT_NAME = "ragtune_sft"
VAL_NAME = "ragtune_sft_val"
IDENTITY_NAME = "ragtune_identity"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output",
                  "system": "system"}


def doc_hash(chunks: Sequence[Chunk]) -> str:
    """Content hash of a document as stored in the index (source, sections and texts)."""
    h = hashlib.sha256()
    for c in sorted(chunks, key=lambda c: c.position):
        h.update(json.dumps([c.source, c.position, c.section, c.text], ensure_ascii=False).encode())
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def atomic_write_json(path: Path, data: object) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


class PairCache:
    """`<cache_dir>/pairs/<fingerprint hash>/<document hash>.json`: pairs per chunk position."""

    def __init__(self, cache_dir: Path, fingerprint: str) -> None:
        digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / "pairs" / digest
        self.fingerprint = fingerprint

    def _path(self, dhash: str) -> Path:
        return self.dir / f"{dhash}.json"

    def get(self, dhash: str) -> dict[int, list[QAPair]] | None:
        path = self._path(dhash)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {int(pos): [QAPair.from_json(p) for p in pairs]
                    for pos, pairs in data["pairs"].items()}
        except (ValueError, KeyError, TypeError):
            return None  # a damaged entry is regenerated

    def put(self, dhash: str, source: str, pairs: dict[int, list[QAPair]]) -> None:
        data = {"source": source, "fingerprint": self.fingerprint,
                "pairs": {str(pos): [p.to_json() for p in ps] for pos, ps in pairs.items()}}
        atomic_write_json(self._path(dhash), data)

    def prune(self, keep: set[str]) -> int:
        """Delete entries of documents no longer in the index; returns how many."""
        if not self.dir.is_dir():
            return 0
        removed = 0
        for path in self.dir.glob("*.json"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def in_validation(question: str, seed: int, ratio: float) -> bool:
    """Deterministic, incremental-stable split: a hash of seed + question against the ratio."""
    h = hashlib.sha256(f"{seed}\x00{question}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < ratio


def split_pairs(pairs: Sequence[tuple[QAPair, Chunk]], seed: int, ratio: float
                ) -> tuple[list[tuple[QAPair, Chunk]], list[tuple[QAPair, Chunk]]]:
    """(train, validation); a question's plain and context rows land on the same side."""
    if ratio <= 0 or len(pairs) < 2:
        return list(pairs), []
    val = [p for p in pairs if in_validation(p[0].question, seed, ratio)]
    if not val:  # tiny corpora: hold out at least one question
        val = [min(pairs, key=lambda p: hashlib.sha256(f"{seed}\x00{p[0].question}".encode())
                   .digest())]
    val_ids = {id(p) for p in val}
    return [p for p in pairs if id(p) not in val_ids], val


def write_dataset(datasets_dir: Path, train: list[dict], val: list[dict], identity: list[dict]
                  ) -> dict[str, Path]:
    """Write the alpaca files, then register them in dataset_info.json (merged, atomic)."""
    from ragtune.datasets import DatasetSpec, read_dataset_info, write_dataset_info

    files = {SFT_NAME: train, VAL_NAME: val, IDENTITY_NAME: identity}
    written: dict[str, Path] = {}
    for name, rows in files.items():
        path = datasets_dir / f"{name}.json"
        if rows:
            atomic_write_json(path, rows)
            written[name] = path
        else:
            path.unlink(missing_ok=True)
    specs = [DatasetSpec(name, f"{name}.json", "alpaca", columns=dict(ALPACA_COLUMNS))
             for name in written]
    info_path = datasets_dir / "dataset_info.json"
    if info_path.is_file():  # drop our entries whose file is gone (e.g. no validation split)
        stale = {n for n in files if n not in written} & set(read_dataset_info(datasets_dir))
        if stale:
            raw = json.loads(info_path.read_text(encoding="utf-8"))
            atomic_write_json(info_path, {k: v for k, v in raw.items() if k not in stale})
    written["dataset_info"] = write_dataset_info(datasets_dir, specs)
    return written
