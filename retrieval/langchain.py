"""A LangChain retriever over ragtune's index, so a LangChain chain can use it unchanged.

    from retrieval.index import open_index
    from retrieval.langchain import RagtuneRetriever
    retriever = RagtuneRetriever(index=open_index(load_settings()), k=4, mode="hybrid")
    docs = retriever.invoke("How many days of annual leave?")
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, field_validator

from ragtune.types import Retriever


class RagtuneRetriever(BaseRetriever):
    """Returns ragtune chunks as Documents (metadata: source, section, chunk_id, chunk_index, score)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    k: int = 5
    mode: str = "hybrid"

    @field_validator("index")
    @classmethod
    def _is_retriever(cls, value: Any) -> Any:
        if not isinstance(value, Retriever):
            raise TypeError(f"index must be a ragtune Retriever (e.g. HybridIndex), "
                            f"got {type(value).__name__}")
        return value

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("hybrid", "dense", "bm25"):
            raise ValueError(f"mode must be hybrid, dense or bm25, got {value!r}")
        return value

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.index.search(query, k=self.k, mode=self.mode)
        return [Document(page_content=hit.chunk.text, id=str(hit.chunk.id),
                         metadata={"source": hit.chunk.source, "section": hit.chunk.section,
                                   "chunk_id": hit.chunk.id, "chunk_index": hit.chunk.position,
                                   "score": hit.score})
                for hit in hits]
