"""Dense vectors in FAISS: an IndexIDMap2 over IndexFlatIP whose ids are chunk ids.

Flat inner product over unit vectors is exact cosine search (10k x 384 takes well under a
millisecond); the id map lets chunks be removed. The file is written atomically (serialised to
bytes, written to a temp file, fsync'd, os.replace'd), so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np


log = logging.getLogger(__name__)


class DenseIndex:
    """FAISS exact inner-product index addressed by chunk id."""

    def __init__(self, dim: int, index=None) -> None:
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All chunk ids held, sorted."""
        import faiss

        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids) -> int:
        """Remove chunk ids; returns how many were present."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        return int(self._index.remove_ids(ids)) if len(ids) else 0

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (chunk id, cosine similarity), best first."""
        if len(self) == 0 or k <= 0:
            return []
        import faiss

        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dim)
        # One query: OpenMP's thread start-up and spin-waiting cost more than the scan itself
        # (10x slower on a busy 2-core machine), so scan on the calling thread only.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, ids = self._index.search(query, min(k, len(self)))
        finally:
            faiss.omp_set_num_threads(threads)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def save(self, path: Path) -> None:
        """Write the index atomically (temp file + fsync + os.replace)."""
        import faiss

        data = faiss.serialize_index(self._index)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(data.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int) -> DenseIndex | None:
        """Read a saved index; None when missing, unreadable or of another dimension."""
        import faiss

        if not path.is_file():
            return None
        try:
            index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
        except (RuntimeError, OSError, ValueError) as err:
            log.warning("ignoring unreadable FAISS file %s: %s", path, err)
            return None
        if index.d != dim or not hasattr(index, "id_map"):
            log.warning("ignoring FAISS file %s (dimension %s, expected %s)", path, index.d, dim)
            return None
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        return cls(dim, index)
