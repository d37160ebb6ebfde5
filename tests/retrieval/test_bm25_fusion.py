"""BM25 tokenisation (jieba for Chinese), its saved file, and reciprocal rank fusion."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.bm25 import BM25Index, tokenize
from retrieval.fusion import reciprocal_rank_fusion


def test_tokenize_english_lowercases_and_drops_stopwords():
    assert tokenize("The Fire-Drill is held at Point B, every QUARTER.") == \
        ["fire", "drill", "held", "point", "b", "every", "quarter"]


def test_tokenize_chinese_uses_jieba_words():
    tokens = tokenize("员工的年假须提前申请")
    assert "年假" in tokens and "申请" in tokens and "员工" in tokens
    assert "的" not in tokens  # stopword


def test_tokenize_mixed_text_keeps_both_scripts_apart():
    tokens = tokenize("TW40泵的维护周期是500小时")
    assert "tw40" in tokens and "500" in tokens and "维护" in tokens


def test_bm25_ranks_and_survives_save_and_load(tmp_path):
    texts = ["the pump tubing cartridge", "annual leave policy", "年假 申请 流程", "pump manual"]
    index = BM25Index.build([10, 20, 30, 40], [tokenize(t) for t in texts])
    assert [i for i, _ in index.search("pump cartridge", 5)] == [10, 40]
    assert index.search("年假", 5)[0][0] == 30
    path = tmp_path / "bm25.npz"
    index.save(path)
    loaded = BM25Index.load(path)
    assert loaded is not None and np.array_equal(loaded.ids, index.ids)
    assert loaded.search("pump cartridge", 5) == index.search("pump cartridge", 5)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_unreadable_bm25_file_is_ignored(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert BM25Index.load(tmp_path / "bad.npz") is None
    assert BM25Index.load(tmp_path / "missing.npz") is None


def test_empty_bm25_index(tmp_path):
    index = BM25Index.build([], [])
    assert index.search("anything", 3) == []
    index.save(tmp_path / "e.npz")
    assert len(BM25Index.load(tmp_path / "e.npz")) == 0


def test_rrf_rewards_agreement_and_is_stable():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 4, 1]])
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    # equal scores keep first-seen order
    assert [i for i, _ in reciprocal_rank_fusion([[7, 8], [8, 7]])] == [7, 8]
    weighted = reciprocal_rank_fusion([[1], [2]], weights=[1.0, 2.0])
    assert [i for i, _ in weighted] == [2, 1]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([[1]], weights=[1.0, 2.0])
