"""The LangChain retriever over the same index, used the way a LangChain chain uses it."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda

from retrieval.langchain import RagtuneRetriever


def test_retriever_returns_documents_with_metadata(index):
    retriever = RagtuneRetriever(index=index, k=2)
    docs = retriever.invoke("fire drills assembly point")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.metadata["source"] == "docs/safety/fire.md"
    assert top.metadata["section"].startswith("Site safety")
    assert set(top.metadata) == {"source", "section", "chunk_id", "chunk_index", "score"}
    assert top.page_content == index.chunks("docs/safety/fire.md")[top.metadata["chunk_index"]].text
    assert top.metadata["score"] >= docs[1].metadata["score"]


def test_retriever_in_a_chain_and_modes(index):
    chain = RagtuneRetriever(index=index, k=1, mode="bm25") | RunnableLambda(
        lambda docs: docs[0].metadata["source"])
    assert chain.invoke("年假申请") == "docs/zh/handbook.md"
    batch = RagtuneRetriever(index=index, k=1, mode="dense").batch(["tubing cartridge", "VPN"])
    assert [b[0].metadata["source"] for b in batch] == ["docs/products/tw40.txt", "docs/it/vpn.html"]


def test_retriever_validates_its_fields(index):
    with pytest.raises(ValueError, match="mode"):
        RagtuneRetriever(index=index, mode="sparse")
    with pytest.raises((TypeError, ValueError)):
        RagtuneRetriever(index=object())
