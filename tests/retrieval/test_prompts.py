"""Per-embedder prompts (E5/BGE) from a tiny sentence-transformers model's own config, and Chinese
queries ranked densely by a multilingual embedder (BM25 alone only for an English-only one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.embedders import SentenceTransformerEmbedder, default_prompts, english_only, known_languages
from retrieval.index import HybridIndex
from retrieval.store import DocumentRecord, NewChunk
from tests.retrieval.test_embedders import WORDS

BGE_ZH = "为这个句子生成表示以用于检索相关文章："


def tiny_bert(path: Path) -> Path:
    """A 2-layer BERT with a word-level tokenizer (every word of WORDS is a token of its own)."""
    import torch
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]").save_pretrained(path)
    torch.manual_seed(3)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(path)
    return path


def st_dir(root: Path, prompts: dict[str, str] | None) -> Path:
    """A tiny BERT saved as a sentence-transformers model whose config carries `prompts`."""
    from sentence_transformers import SentenceTransformer, models

    bert = tiny_bert(root / "bert")
    word = models.Transformer(str(bert))
    model = SentenceTransformer(modules=[word, models.Pooling(word.get_embedding_dimension())],
                                prompts=prompts or {})
    model.save(str(root / "st"))
    return root / "st"


def test_prompts_from_the_models_own_config_are_applied(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    # the tiny word-level vocab has no "query:"; E5-style prompts made of its own words
    path = st_dir(tmp_path, {"query": "the safety ", "passage": "a badge "})
    emb = SentenceTransformerEmbedder("tiny-e5", str(path))
    assert (emb.query_prompt, emb.passage_prompt) == ("the safety ", "a badge ")
    raw = SentenceTransformer(str(path))
    want_q = raw.encode(["the safety pump"], normalize_embeddings=True)[0]
    want_p = raw.encode(["a badge pump"], normalize_embeddings=True)[0]
    assert np.allclose(emb.embed_query("pump"), want_q, atol=1e-5)
    assert np.allclose(emb.embed(["pump"])[0], want_p, atol=1e-5)
    assert not np.allclose(want_q, want_p, atol=1e-3)  # the prompt changes the vector
    assert abs(float(np.linalg.norm(emb.embed_query("pump"))) - 1) < 1e-5
    plain = SentenceTransformerEmbedder("tiny-e5", str(path), query_prompt="", passage_prompt="")
    assert plain.name != emb.name  # an index built with prompts is not searched without them


def test_setting_overrides_and_known_families() -> None:
    assert default_prompts("intfloat/multilingual-e5-small", None) == ("query: ", "passage: ")
    assert default_prompts("BAAI/bge-small-zh-v1.5", None) == (BGE_ZH, "")
    assert default_prompts("BAAI/bge-base-en-v1.5", None)[0].startswith("Represent this sentence")
    assert default_prompts("BAAI/bge-m3", None) == ("", "")
    assert default_prompts("intfloat/e5-small", {"query": "Q: ", "document": "D: "}) == ("Q: ", "D: ")
    assert english_only(known_languages("embedded:all-minilm-l6-v2"))
    assert not english_only(known_languages("intfloat/multilingual-e5-small"))
    assert not english_only(known_languages("BAAI/bge-small-zh-v1.5")) and not english_only(None)


class TableEmbedder:
    """A 'multilingual' embedder by table: texts about pumps and about leave point different ways."""

    name, dim = "table#000000000000", 2

    def __init__(self, languages: frozenset[str]) -> None:
        self.languages = languages

    def embed(self, texts):
        rows = [[1.0, 0.0] if ("泵" in t or "pump" in t) else [0.0, 1.0] for t in texts]
        return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize(("languages", "dense_used"), [(frozenset({"multilingual"}), True),
                                                      (frozenset({"en"}), False)])
def test_chinese_queries_use_dense_ranking_unless_the_embedder_is_english_only(
        tmp_path: Path, languages: frozenset[str], dense_used: bool) -> None:
    emb = TableEmbedder(languages)
    index = HybridIndex.open(tmp_path / f"ix-{dense_used}", emb)
    texts = ["The pump runs daily.", "Annual leave is 27 days."]
    for i, text in enumerate(texts):
        rec = DocumentRecord(path=f"/d{i}", source=f"d{i}.txt", sha256=str(i), mtime_ns=0, size=1,
                             status="ok", error=None, chunks=1)
        index.write_document(rec, [NewChunk(0, "", text, f"h{i}", text.lower().split(), emb.embed([text])[0])])
    query = "水泵多久运行一次"  # no BM25 term in common: only the dense ranking can find the pump chunk
    assert index.reads(query) is dense_used
    hits = index.search(query, k=1)
    assert (bool(hits) and hits[0].chunk.source == "d0.txt") is dense_used
    index.close()
