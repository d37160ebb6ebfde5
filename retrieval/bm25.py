"""BM25 keyword ranking (bm25s) over jieba tokens for Chinese and lowercase words otherwise.

The index is rebuilt from the chunk store's stored tokens when the store changed (fast: no
tokenising), and saved as one `.npz` file written atomically (temp file + os.replace) together
with the chunk ids it covers, so a stale or half-written file is detected and rebuilt.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RUNS = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]")
ZH_STOPWORDS = frozenset("的 了 和 与 及 是 在 也 就 都 而 或 之 其 为 以 于 把 被 对 从 这 那 有 吗 呢 吧 啊 个 们 等".split())
FORMAT_VERSION = 1


@lru_cache(maxsize=1)
def _english_stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@lru_cache(maxsize=1)
def _jieba():
    """Import jieba once, quietly (it logs its dictionary loading on first use)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def _chinese_tokens(run: str) -> list[str]:
    """jieba search-mode words (dictionary only, so a text and a query segment alike), plus
    bigrams over runs of single characters, so that words missing from jieba's dictionary
    (年假 -> 年 / 假) still match as a whole."""
    words = _jieba().lcut_for_search(run, HMM=False)
    out = [w for w in words if w not in ZH_STOPWORDS]
    singles: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and word not in ZH_STOPWORDS:
            singles.append(word)
            continue
        out.extend(a + b for a, b in zip(singles, singles[1:]))
        singles = []
    return out


def tokenize(text: str) -> list[str]:
    """Split text into BM25 tokens: jieba words for Chinese runs, lowercase words otherwise."""
    tokens: list[str] = []
    english_stop = _english_stopwords()
    for run in _TOKEN_RUNS.findall(text.lower()):
        if _CJK_RUN.match(run):
            tokens.extend(_chinese_tokens(run))
        elif run not in english_stop:
            tokens.append(run)
    return tokens


class BM25Index:
    """A bm25s index over chunks, addressed by chunk id."""

    def __init__(self, ids: np.ndarray, model) -> None:
        self.ids = ids  # int64 chunk ids, one per BM25 document, in store order
        self._model = model  # bm25s.BM25 or None when empty

    @classmethod
    def build(cls, ids: Sequence[int], token_lists: Sequence[Sequence[str]]) -> BM25Index:
        """Index token lists (one per chunk id)."""
        import bm25s

        ids_arr = np.asarray(ids, dtype=np.int64)
        if len(ids_arr) == 0:
            return cls(ids_arr, None)
        model = bm25s.BM25()
        model.index([list(t) for t in token_lists], show_progress=False)
        return cls(ids_arr, model)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top-k (chunk id, BM25 score) pairs with a positive score, best first."""
        if self._model is None or k <= 0:
            return []
        vocab = self._model.vocab_dict
        token_ids = [vocab[t] for t in tokenize(query) if t in vocab]
        if not token_ids:
            return []
        scores = self._model.get_scores_from_ids(token_ids)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self.ids[i]), float(scores[i])) for i in top if scores[i] > 0]

    def save(self, path: Path) -> None:
        """Write the index to one .npz file atomically.

        Not bm25s's own `BM25.save`/`load`, on purpose: they write a *directory* of several
        files (params.index.json, vocab.index.json, data/indices/indptr .npy), which cannot be
        swapped in atomically, so a SIGKILL mid-save would leave a mix of old and new files
        that loads without error and scores wrongly. One .npz written to a temp file, fsync'd
        and `os.replace`d is all-or-nothing; the arrays are exactly the ones bm25s saves
        (`scores` CSC arrays, `vocab_dict`, k1/b/delta), and `load` rebuilds the `BM25` object
        from them. Revisit if bm25s grows a single-file or atomic save (versioned directories
        with a pointer file would be the alternative; the crash tests cover either).
        """
        arrays: dict[str, np.ndarray] = {"version": np.asarray(FORMAT_VERSION),
                                         "ids": self.ids}
        if self._model is not None:
            vocab = self._model.vocab_dict
            tokens = sorted(vocab, key=vocab.__getitem__)
            arrays.update(
                data=self._model.scores["data"], indices=self._model.scores["indices"],
                indptr=self._model.scores["indptr"],
                num_docs=np.asarray(self._model.scores["num_docs"]),
                vocab=np.asarray(tokens, dtype=str),
                params=np.asarray([self._model.k1, self._model.b, self._model.delta]))
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> BM25Index | None:
        """Read a saved index; None when the file is missing, unreadable or of another format."""
        import bm25s

        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                if int(npz["version"]) != FORMAT_VERSION:
                    return None
                ids = npz["ids"].astype(np.int64)
                if len(ids) == 0:
                    return cls(ids, None)
                k1, b, delta = (float(x) for x in npz["params"])
                model = bm25s.BM25(k1=k1, b=b, delta=delta)
                model.scores = {"data": npz["data"], "indices": npz["indices"],
                                "indptr": npz["indptr"], "num_docs": int(npz["num_docs"])}
                model.vocab_dict = {str(t): i for i, t in enumerate(npz["vocab"])}
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
            log.warning("ignoring unreadable BM25 file %s: %s", path, err)
            return None
        model.unique_token_ids_set = set(model.vocab_dict.values())
        model.nonoccurrence_array = None  # only the bm25l/bm25+ variants use one
        return cls(ids, model)
