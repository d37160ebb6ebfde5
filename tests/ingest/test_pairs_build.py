"""Building the dataset: files and dataset_info, RAFT layout and oracle share, the validation
split, the eval-leak check, incremental regeneration, and the `pairs` command on a real index."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from ragtune.datasets import SFTExample, load_dataset, read_dataset_info
from ingest.pairs import PairsConfig, build_pairs
from ingest.pairs.base import QAPair
from ingest.pairs.raft import DistractorPool, context_row
from ragtune.prompts import NO_ANSWER, cited_answer, system_prompt, user_prompt
from ragtune.settings import load_settings
from ragtune.types import Chunk

DOCS = {
    "hr/leave.md": ("Leave Policy > Annual leave", [
        "Full-time employees receive 27 days of annual leave per leave year.",
        "You may carry over up to 5 days of unused annual leave into the next leave year.",
        "Sick leave must be reported to your line manager before 09:30 on the first day."]),
    "ops/handbook.md": ("Operations Handbook > Meetings", [
        "The Tuesday Tide is the weekly all-company operations meeting.",
        "The courier collects from Varrow House at 16:00 every weekday.",
        "Orders for more than 20 Tidewell units are treated as project orders."]),
    "zh/手册.md": ("员工手册 > 休假", [
        "员工累计工作已满 1 年不满 10 年的，年休假 5 天。",
        "病假须在 3 个工作日内提交医院证明。",
        "员工辞职须提前 30 天以书面形式通知公司。"]),
}


def corpus(docs=DOCS) -> list[Chunk]:
    chunks, next_id = [], 1
    for source, (section, texts) in docs.items():
        for pos, text in enumerate(texts):
            chunks.append(Chunk(next_id, source, pos, section, text))
            next_id += 1
    return chunks


@pytest.fixture()
def settings(workspace):
    return load_settings(workspace=workspace, assistant_name="Tessa",
                         organisation="Lumenhollow")


def test_build_writes_llama_factory_dataset_that_loads(settings, tmp_path):
    cfg = PairsConfig(eval_file=str(tmp_path / "none.jsonl"), val_ratio=0.2)
    report = build_pairs(settings, corpus(), cfg)
    ddir = settings.paths.datasets_dir
    info = read_dataset_info(ddir)
    assert set(info) == {"ragtune_sft", "ragtune_sft_val", "ragtune_identity"}
    raw = json.loads((ddir / "dataset_info.json").read_text())
    assert raw["ragtune_sft"] == {"file_name": "ragtune_sft.json", "formatting": "alpaca",
                                  "columns": {"prompt": "instruction", "query": "input",
                                              "response": "output", "system": "system"}}
    train = load_dataset("ragtune_sft", ddir)
    val = load_dataset("ragtune_sft_val", ddir)
    ident = load_dataset("ragtune_identity", ddir)
    assert all(isinstance(e, SFTExample) for e in train + val + ident)
    assert (len(train), len(val), len(ident)) == (report.train_rows, report.val_rows,
                                                  report.identity_rows)
    assert report.pairs >= 9 and report.train_rows + report.val_rows == 2 * report.pairs
    assert set(report.per_document) == set(DOCS) and min(report.per_document.values()) >= 2
    assert train[0].messages[0] == {"role": "system", "content": system_prompt("Tessa",
                                                                               "Lumenhollow")}
    # a question's plain and context rows land on the same side of the split
    def questions(path):
        return {re.sub(r"(?s)^Context:.*\n\nQuestion: ", "", r["instruction"])
                for r in json.loads(path.read_text())}
    assert not questions(ddir / "ragtune_sft.json") & questions(ddir / "ragtune_sft_val.json")
    # the identity pairs speak the configured name and organisation, in English and Chinese
    answers = [e.messages[-1]["content"] for e in ident]
    assert any("I am Tessa" in a and "Lumenhollow" in a for a in answers)
    assert any("我是Tessa" in a for a in answers)
    assert "pairs:" in report.line() and "rejected" in report.line()
    assert (ddir / "pairs_config.yaml").is_file()


def test_split_and_sampling_are_deterministic_under_seed(settings, workspace, tmp_path):
    cfg = PairsConfig(eval_file="", val_ratio=0.3, seed=3)
    ddir = settings.paths.datasets_dir
    build_pairs(settings, corpus(), cfg)
    first = [(ddir / n).read_bytes() for n in ("ragtune_sft.json", "ragtune_sft_val.json")]
    build_pairs(settings, corpus(), cfg)
    assert [(ddir / n).read_bytes() for n in ("ragtune_sft.json", "ragtune_sft_val.json")] == first
    build_pairs(settings, corpus(), PairsConfig(eval_file="", val_ratio=0.3, seed=4))
    assert [(ddir / n).read_bytes() for n in ("ragtune_sft.json",
                                                "ragtune_sft_val.json")] != first


def _pairs_and_pool(n_docs: int = 6, per_doc: int = 5):
    chunks = [Chunk(d * 100 + p, f"doc{d}.md", p, f"Doc {d}", f"Fact {d}-{p}: value {d * p}.")
              for d in range(n_docs) for p in range(per_doc)]
    pairs = [(QAPair(f"What is fact {c.source} {c.position} number {i}?", f"value {c.id}",
                     c.text, c.source, c.position, "test", short=f"v{c.id}"), c)
             for i in range(8) for c in chunks]
    return pairs, DistractorPool(chunks)


def _passage_blocks(instruction: str) -> list[str]:
    """The passage blocks of a context prompt ("[n] source › section\ntext")."""
    assert instruction.startswith("Context:\n")
    body = instruction[len("Context:\n"):].rsplit("\n\nQuestion: ", 1)[0]
    return body.split("\n\n")


def test_raft_layout_matches_serving_prompt():
    pairs, pool = _pairs_and_pool()
    cfg = PairsConfig(oracle_p=1.0, distractors=3)
    system = system_prompt("Tessa", "Lumenhollow")
    by_text = {c.text: c for c in pool.chunks}
    for pair, chunk in pairs[:40]:
        row = context_row(pair, chunk, pool, cfg, system)
        blocks = _passage_blocks(row["instruction"])
        assert len(blocks) == 4  # the oracle and 3 distractors, as /ask shows top_k=4
        shown = [by_text[b.split("\n", 1)[1]] for b in blocks]
        # the user turn is exactly the layout /ask uses (ragtune.prompts.user_prompt)
        assert row["instruction"] == user_prompt(pair.question, shown)
        n = next(i for i, c in enumerate(shown, 1) if c.id == chunk.id)
        assert all(c.source != chunk.source for c in shown if c.id != chunk.id)  # other docs
        assert row["output"] == cited_answer(pair.short, n, pair.quote)
        assert row["output"].startswith(f"{pair.short.strip()} [{n}]")  # the answer comes first
        assert pair.quote in blocks[n - 1]
        assert row["system"] == system and row["kind"] == "context"


def test_raft_oracle_share_and_position_are_random_but_seeded():
    pairs, pool = _pairs_and_pool()  # 240 pairs
    for p_keep in (0.8, 0.5):
        cfg = PairsConfig(oracle_p=p_keep, distractors=2, seed=11)
        rows = [context_row(p, c, pool, cfg, None) for p, c in pairs]
        kinds = Counter(r["kind"] for r in rows)
        share = kinds["context"] / len(rows)
        sd = (p_keep * (1 - p_keep) / len(rows)) ** 0.5
        assert abs(share - p_keep) < 4 * sd, (p_keep, share)
        dropped = [r for r in rows if r["kind"] == "context_no_oracle"]
        # without the oracle the default answer is the refusal, and k+1 passages are shown
        assert {r["output"] for r in dropped} == {NO_ANSWER}
        assert all(len(re.findall(r"^\[\d\] ", r["instruction"], re.M)) == 3 for r in dropped)
        positions = Counter(re.search(r" \[(\d)\]($|\n)", r["output"]).group(1)
                            for r in rows if r["kind"] == "context")
        assert set(positions) == {"1", "2", "3"}  # the oracle is shuffled among distractors
        assert rows == [context_row(p, c, pool, cfg, None) for p, c in pairs]  # seeded
    raft = PairsConfig(oracle_p=0.0, no_oracle_answer="ground_truth")  # RAFT's original
    assert all(context_row(p, c, pool, raft, None)["output"].startswith("value ")
               for p, c in pairs[:20])


def test_distractors_are_the_retrievers_near_misses_and_never_hold_the_answer():
    pairs, pool = _pairs_and_pool()
    pair, oracle = pairs[0]
    near = [c for c in pool.chunks if c.id != oracle.id][:6]
    holder = Chunk(9999, "other.md", 0, "", f"It says {pair.short} here.")
    calls = []

    def search(question: str, k: int) -> list[Chunk]:
        calls.append((question, k))
        return [oracle, holder, *near][:k]

    hard = DistractorPool(pool.chunks + [holder], search, hard=2)
    cfg = PairsConfig(oracle_p=1.0, distractors=3, seed=5)
    row = context_row(pair, oracle, hard, cfg, None)
    shown = re.findall(r"^\[\d\] (.+)$", row["instruction"], re.M)
    assert calls and calls[0][0] == pair.question
    assert f"{near[0].source}" in shown[0] or any(near[0].source in s for s in shown)
    assert not any(s.startswith("other.md") for s in shown)  # holds the answer: never shown
    drawn = hard.draw(oracle, 3, random.Random(1), pair.question, pair.short)
    assert drawn[:2] == near[:2] and oracle not in drawn and holder not in drawn
    assert len(drawn) == 3


def test_eval_questions_never_reach_training(settings, tmp_path):
    eval_file = tmp_path / "qa.jsonl"
    leaked = ["Full-time employees receive how many days of annual leave per leave year?",
              "员工辞职须提前多少天以书面形式通知公司？"]
    eval_file.write_text("".join(json.dumps({"question": q, "answer": "x", "source": "s"},
                                            ensure_ascii=False) + "\n" for q in leaked),
                         encoding="utf-8")
    base = build_pairs(settings, corpus(), PairsConfig(eval_file="", val_ratio=0.0))
    report = build_pairs(settings, corpus(), PairsConfig(eval_file=str(eval_file),
                                                         val_ratio=0.0))
    assert report.rejected["eval_leak"] == 2 and report.eval_questions == 2
    assert report.pairs == base.pairs - 2
    text = (settings.paths.datasets_dir / "ragtune_sft.json").read_text(encoding="utf-8")
    rows = json.loads(text)
    asked = {r["instruction"].rsplit("Question: ", 1)[-1] for r in rows}
    assert not asked & set(leaked)
    assert "eval_leak 2" in report.line()


def test_incremental_only_changed_documents_are_generated(settings):
    cfg = PairsConfig(eval_file="")
    first = build_pairs(settings, corpus(), cfg)
    assert (first.generated_documents, first.cached_documents) == (3, 0)
    again = build_pairs(settings, corpus(), cfg)
    assert (again.generated_documents, again.cached_documents) == (0, 3)
    assert again.pairs == first.pairs
    docs = dict(DOCS)
    section, texts = docs["hr/leave.md"]
    docs["hr/leave.md"] = (section, [*texts[:2], "Bereavement leave is 5 days per year."])
    del docs["ops/handbook.md"]
    changed = build_pairs(settings, corpus(docs), cfg)
    assert (changed.generated_documents, changed.cached_documents) == (1, 1)
    assert changed.pruned_cache == 2  # the old leave.md version and the removed handbook
    rows = json.loads((settings.paths.datasets_dir / "ragtune_sft.json").read_text())
    sources = {r["source"] for r in rows}
    assert "ops/handbook.md" not in sources and "hr/leave.md" in sources
    forced = build_pairs(settings, corpus(docs), cfg, changed_sources=["zh/手册.md"])
    assert (forced.generated_documents, forced.cached_documents) == (1, 1)


def test_pairs_command_on_an_ingested_index(workspace, tmp_path, capsys, monkeypatch):
    from ingest.commands import ingest
    from ingest.pairs.commands import pairs

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave Policy\n\n## Annual leave\n\n" + " ".join(
        DOCS["hr/leave.md"][1]) + "\n\n## Sickness\n\nTell your manager before 09:30.\n")
    (docs / "手册.md").write_text("# 员工手册\n\n## 休假\n\n" + "".join(DOCS["zh/手册.md"][1]) + "\n",
                                 encoding="utf-8")
    monkeypatch.setenv("RAGTUNE_ASSISTANT_NAME", "Tessa")
    assert ingest([docs], workspace=workspace, embedder="import:tests.fakes:HashEmbedder?dim=64") == 0
    capsys.readouterr()
    assert pairs(workspace=workspace, eval_file="", val_ratio=0.1) == 0
    out = capsys.readouterr().out
    assert re.search(r"pairs: \d+ validated from 2 documents", out)
    train = load_dataset("ragtune_sft", workspace / "datasets")
    assert len(train) >= 8
    assert any("Tessa" in e.messages[0]["content"] for e in train)
    assert (workspace / "datasets" / "pairs_config.yaml").is_file()
    assert list((workspace / "logs").glob("pairs-*.log"))
