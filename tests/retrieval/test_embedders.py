"""Embedder specs, the weights fingerprint in the name, and the real MiniLM (integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragtune.errors import ConfigError, IndexMismatchError, ModelNotFoundError
from tests.fakes import HashEmbedder
from retrieval.embedders import (SentenceTransformerEmbedder, load_embedder, same_embedder,
                                 split_name)
from retrieval.index import HybridIndex

WORDS = "the a pump leave fire drill annual days tubing cartridge vpn code safety badge".split()


def tiny_sentence_model(path: Path, seed: int) -> Path:
    """A 2-layer BERT with a word-level vocab saved as a plain HF dir (mean pooling in ST)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-st")
    return tiny_sentence_model(root / "a", seed=1), tiny_sentence_model(root / "b", seed=2)


def test_fake_specs():
    emb = load_embedder("import:tests.fakes:HashEmbedder?dim=32")
    assert isinstance(emb, HashEmbedder) and emb.dim == 32 and emb.name == "import:tests.fakes:HashEmbedder?dim=32"
    assert load_embedder("import:tests.fakes:HashEmbedder?dim=16&salt=x").name == "import:tests.fakes:HashEmbedder?dim=16&salt=x"
    for bad in ("import:tests.fakes:HashEmbedder?dim=1", "import:nope", "import:tests.fakes:hash_spec"):
        with pytest.raises(ConfigError) as err:
            load_embedder(bad)
        assert err.value.field == "embedder"
    with pytest.raises(ModelNotFoundError, match="no_such_module"):
        load_embedder("import:no_such_module:Thing")


def test_name_helpers():
    assert split_name("embedded:all-minilm-l6-v2#0123456789ab") == \
        ("embedded:all-minilm-l6-v2", "0123456789ab")
    assert split_name("import:tests.fakes:HashEmbedder?dim=64") == ("import:tests.fakes:HashEmbedder?dim=64", None)
    assert same_embedder("x#0123456789ab", "/models/x#0123456789ab")  # same weights, other path
    assert not same_embedder("x#0123456789ab", "x#ba9876543210")
    assert not same_embedder("import:tests.fakes:HashEmbedder?dim=64", "import:tests.fakes:HashEmbedder?dim=32")


def test_sentence_transformer_embedder_fingerprints_weights(tiny_dirs, tmp_path):
    a_dir, b_dir = tiny_dirs
    a = SentenceTransformerEmbedder("my-model", str(a_dir), batch_size=2)
    a_again = load_embedder(str(a_dir))
    b = SentenceTransformerEmbedder("my-model", str(b_dir))
    assert a.dim == 32 and a.name.startswith("my-model#")
    assert split_name(a.name)[1] == split_name(a_again.name)[1]  # same weights, same hash
    assert a.name != b.name  # same spec, other weights: caught
    vectors = a.embed(["pump tubing cartridge", "annual leave days", "fire drill", "vpn code"])
    assert vectors.dtype == np.float32 and vectors.shape == (4, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # batches are sorted by token length; rows must come back in input order
    assert a.token_lengths(["pump", "annual leave days"]) == [3, 5]
    singles = np.stack([a.embed([t])[0] for t in ["pump tubing cartridge", "fire drill"]])
    assert np.allclose(vectors[[0, 2]], singles, atol=1e-4)
    assert a.embed([]).shape == (0, 32)
    with HybridIndex.open(tmp_path / "index", a):
        pass
    with HybridIndex.open(tmp_path / "index", a_again):  # other spec, same weights: accepted
        pass
    with pytest.raises(IndexMismatchError):
        HybridIndex.open(tmp_path / "index", b)


@pytest.mark.integration
def test_embedded_minilm(embedded_embedder_dir):
    emb = load_embedder("embedded:all-minilm-l6-v2")
    assert emb.dim == 384 and emb.name.startswith("embedded:all-minilm-l6-v2#")
    assert Path(emb.location) == embedded_embedder_dir.resolve()
    assert emb.languages == {"en"}  # from the model card: Chinese queries go to BM25
    vecs = emb.embed(["How many days of annual leave?", "Employees get 27 days of annual leave.",
                      "The pump tubing must be replaced every 500 hours."])
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
