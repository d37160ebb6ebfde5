"""Small deterministic fakes of the pluggable interfaces, for fast tests and dry runs.

They are real implementations of the interfaces (not mocks): the fake embedder hashes
character n-grams into a fixed-size vector, so similar texts get similar vectors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from ragtune.types import GenerationRequest, GenerationResult, Generator, Retriever


def hash_spec(dim: int, salt: str = "") -> str:
    """The embedder spec that plugs `HashEmbedder` in through retrieval's `import:` scheme."""
    return f"import:tests.fakes:HashEmbedder?dim={dim}" + (f"&salt={salt}" if salt else "")


class HashEmbedder:
    """Deterministic bag-of-n-grams embedder (char 3-grams for CJK, words otherwise)."""

    def __init__(self, dim: int | str = 64, salt: str = "") -> None:
        self._dim = int(dim)
        if self._dim < 2:
            raise ValueError("the hash embedder needs a dimension of at least 2")
        self._salt = salt

    @property
    def name(self) -> str:
        return hash_spec(self._dim, self._salt)

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, text: str) -> list[str]:
        text = text.lower()
        words = re.findall(r"[a-z0-9]+", text)
        cjk = re.findall(r"[\u4e00-\u9fff]", text)
        grams = ["".join(cjk[i:i + 2]) for i in range(max(len(cjk) - 1, 0))]
        return words + grams + cjk

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                h = hashlib.blake2b((self._salt + feat).encode(), digest_size=8).digest()
                idx = int.from_bytes(h[:4], "little") % self._dim
                out[row, idx] += 1.0 if h[4] & 1 else -1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm > 0 else out[row]
            if norm == 0:
                out[row, 0] = 1.0
        return out


class EchoGenerator(Generator):
    """Canned-reply generator: answers with a fixed reply or echoes the last user message."""

    def __init__(self, reply: str | None = None, adapters: Sequence[str] = ()) -> None:
        self.reply = reply
        self.adapters = list(adapters)
        self.calls: list[GenerationRequest] = []

    def models(self) -> list[str]:
        return ["base", *self.adapters]

    def _answer(self, req: GenerationRequest) -> str:
        if self.reply is not None:
            return f"[{req.model}] {self.reply}"
        last = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
        return f"[{req.model}] {last}"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.extend(requests)
        results = []
        for req in requests:
            words = self._answer(req).split(" ")[: req.max_new_tokens]
            prompt_tokens = sum(len(m["content"].split()) for m in req.messages)
            results.append(GenerationResult(" ".join(words), prompt_tokens, len(words)))
        return results

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        text = self.generate([request])[0].text
        for i, word in enumerate(text.split(" ")):
            yield word if i == 0 else " " + word


class StaticRetriever(Retriever):
    """A `Retriever` over a fixed list of chunks, ranked by fake-embedding cosine similarity."""

    def __init__(self, chunks, embedder: HashEmbedder | None = None) -> None:
        self.chunks = list(chunks)
        self.embedder = embedder or HashEmbedder()
        self._vectors = self.embedder.embed([c.text for c in self.chunks]) if self.chunks else None

    def search(self, query: str, k: int = 5, mode: str = "hybrid"):
        from ragtune.types import Hit

        if not self.chunks:
            return []
        scores = self._vectors @ self.embedder.embed([query])[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self.chunks[i], float(scores[i])) for i in order]


class CannedGenerator(Generator):
    """Answers each question with the reply of the first key found in its last user turn
    (the text as a model would write it, no model-name prefix); `default` otherwise."""

    def __init__(self, replies: dict[str, str], default: str = "I don't know.") -> None:
        self.replies, self.default = replies, default

    def models(self) -> list[str]:
        return ["base"]

    def _answer(self, req: GenerationRequest) -> str:
        last = next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
        question = last.rsplit("Question:", 1)[-1]
        return next((r for k, r in self.replies.items() if k in question), self.default)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [GenerationResult(self._answer(r), 10, len(self._answer(r).split()))
                for r in requests]

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        text = self._answer(request)
        for i in range(0, len(text), 4):
            yield text[i:i + 4]
