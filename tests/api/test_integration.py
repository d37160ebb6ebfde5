"""End to end with the real embedded SmolLM2-135M-Instruct: /ask with retrieval, and the
openai client streaming, on a real uvicorn (marked integration: slower)."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from serving.config import EngineConfig
from serving.engine import TransformersGenerator
from tests.serving_fixtures import serving, settings_for

QUESTION = "How many days of paid annual leave do employees get?"


@pytest.mark.integration
def test_smollm2_answers_from_the_passages(tmp_path, embedded_generator_dir, retriever) -> None:
    from openai import OpenAI

    engine = TransformersGenerator.load(str(embedded_generator_dir),
                                        config=EngineConfig(max_batch_size=4))
    app = create_app(settings_for(tmp_path), generator=engine, retriever=retriever)
    try:
        with serving(app) as url:
            body = httpx.post(f"{url}/ask", json={"question": QUESTION, "top_k": 2,
                                                  "max_new_tokens": 24}, timeout=300).json()
            client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
            chunks = list(client.chat.completions.create(
                model="base", max_tokens=12, stream=True,
                messages=[{"role": "user", "content": "Say hello."}]))
    finally:
        engine.close()
    assert body["sources"][0]["text"].startswith("Employees get 25 days")
    assert body["answer"].strip() and body["usage"]["completion_tokens"] <= 24
    assert body["usage"]["prompt_tokens"] > 50  # system prompt + passages + question
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].choices[0].finish_reason in ("stop", "length")
