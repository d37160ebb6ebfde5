"""The self generator (a local `Generator` writes the pairs) and the reply parser it shares with
the teacher."""

from __future__ import annotations

import json

import pytest

from ingest.pairs import PairsConfig, build_pairs
from ingest.pairs.llm import pair_messages, parse_pairs
from ingest.pairs.selfgen import SelfGenerator
from tests.fakes import EchoGenerator
from ragtune.settings import load_settings
from ragtune.types import Chunk

CHUNKS = [
    Chunk(1, "manual.md", 0, "TW-40 > Batteries",
          "The TW-40 runs for about 6 years on two lithium cells. Replace both cells together."),
    Chunk(2, "manual.md", 1, "TW-40 > Cleaning",
          "Rinse the sensor nose with fresh water after every deployment."),
    Chunk(3, "zh/手册.md", 0, "手册 > 休假", "员工辞职须提前 30 天以书面形式通知公司。"),
]

REPLY = json.dumps([
    {"question": "How long does a TW-40 run on its batteries?", "answer": "About 6 years."},
    {"question": "员工辞职须提前多少天通知公司？", "answer": "须提前 30 天以书面形式通知公司。"},
    {"question": "", "answer": "an item without a question is skipped"},
], ensure_ascii=False)


def test_self_generator_pairs_are_checked_against_their_own_chunk(workspace):
    local = EchoGenerator(reply=REPLY)  # answers every chunk with the same canned list
    settings = load_settings(workspace=workspace)
    report = build_pairs(settings, CHUNKS, PairsConfig(generator="self", eval_file="", oracle_p=1.0,
                                                       val_ratio=0.0, identity=False),
                         local_generator=local)
    assert len(local.calls) == 3 and local.calls[0].messages == pair_messages(CHUNKS[0], 6)
    rows = json.loads((settings.paths.datasets_dir / "ragtune_sft.json").read_text("utf-8"))
    plain = {(r["source"], r["instruction"]) for r in rows if r["kind"] == "plain"}
    # each answer survives only for the chunk that supports it
    assert plain == {("manual.md", "How long does a TW-40 run on its batteries?"),
                     ("zh/手册.md", "员工辞职须提前多少天通知公司？")}
    assert report.rejected["unsupported"] == 4 and report.pairs == 2
    context = next(r for r in rows if r["kind"] == "context" and r["source"] == "manual.md")
    assert "The TW-40 runs for about 6 years on two lithium cells." in context["output"]


def test_self_generator_counts_replies_that_are_not_json(workspace):
    local = EchoGenerator()  # echoes the prompt: no JSON list in it
    gen = SelfGenerator(local, "echo", batch_size=2)
    assert gen.generate(CHUNKS) == {}
    assert "echo" in gen.fingerprint and len(local.calls) == 3


@pytest.mark.parametrize("text", [
    '[{"question": "Q?", "answer": "A"}]',
    '```json\n[{"question": "Q?", "answer": "A"}]\n```',
    '<think>Let me think [about it]</think>Here: [{"question": "Q?", "answer": "A"}] done',
    '{"pairs": [{"question": "Q?", "answer": "A"}, {"question": "Q2?"}]}',
    '[base] [{"question": "Q?", "answer": "A"}]',
])
def test_parse_pairs_accepts_common_reply_shapes(text):
    assert parse_pairs(text) == [{"question": "Q?", "answer": "A"}]


@pytest.mark.parametrize("text", ["no json here", "[]", '[{"q": "Q?", "a": "A"}]',
                                  '{"answer": "A"}', '[{"question": 1, "answer": "A"}]'])
def test_parse_pairs_rejects_invalid_replies(text):
    with pytest.raises(ValueError, match="no JSON list"):
        parse_pairs(text)


def test_prompt_asks_for_chinese_on_chinese_chunks():
    assert "Chinese" in pair_messages(CHUNKS[2], 3)[1]["content"]
    assert "Chinese" not in pair_messages(CHUNKS[0], 3)[1]["content"]


@pytest.mark.integration
def test_self_generator_with_the_embedded_model(workspace, embedded_generator_dir):
    """SmolLM2-135M writes pairs through ragtune's engine; whatever survives is supported."""
    from ingest.pairs.text import is_supported
    from serving.loading import load_generator  # what the CLI injects for `--pairs self`

    settings = load_settings(workspace=workspace, generator=str(embedded_generator_dir),
                             request_timeout_s=600)
    report = build_pairs(settings, CHUNKS[:1], PairsConfig(
        generator="self", eval_file="", val_ratio=0.0, identity=False, max_pairs_per_chunk=2,
        self_max_new_tokens=48), local_generator=load_generator)
    assert report.chunks == 1 and report.failed_chunks in (0, 1)
    path = settings.paths.datasets_dir / "ragtune_sft.json"
    rows = json.loads(path.read_text("utf-8")) if path.is_file() else []
    by_source = {c.source: c for c in CHUNKS}
    for row in rows:
        if row["kind"] == "plain":
            assert is_supported(row["output"], by_source[row["source"]].text, 0.75)
    assert report.pairs * 2 == len(rows)


def test_the_self_generator_without_a_model_says_how_to_get_one(workspace):
    from ragtune.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the local model"):
        build_pairs(load_settings(workspace=workspace), CHUNKS[:1],
                    PairsConfig(generator="self", eval_file=""))
