"""Splitting real loaded documents: heading paths, CJK punctuation, size/overlap bounds, determinism."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from ingest.loaders import LoadedDocument, load_document
from ingest.splitter import ChunkDraft, SplitConfig, split_document, text_width
from ragtune.errors import ConfigError

CJK_ENDERS = "。！？；"
WORDS = ("policy staff leave travel budget report manager review safety device storage form week "
         "request approval record member visitor badge laboratory sample").split()
HANZI = "员工年假申请经理批准报销差旅安全设备样品实验室访客门禁记录预算审核每周提交表格制度规定"


def english(rng: random.Random, sentences: int) -> str:
    """Deterministic English-like prose: short sentences ending in . ! ? or ;."""
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?", ";"]))
    return " ".join(out)


def chinese(rng: random.Random, sentences: int) -> str:
    """Deterministic Chinese-like prose: clauses joined by '，', sentences ended by 。！？；."""
    out = []
    for _ in range(sentences):
        clauses = ["".join(rng.choice(HANZI) for _ in range(rng.randint(4, 12))) for _ in range(rng.randint(1, 3))]
        out.append("，".join(clauses) + rng.choice(CJK_ENDERS))
    return "".join(out)


def doc(text: str, fmt: str = "markdown") -> LoadedDocument:
    return LoadedDocument(path=Path(f"doc.{fmt}"), text=text, format=fmt, encoding="utf-8")


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def check_invariants(chunks: list[ChunkDraft], cfg: SplitConfig) -> None:
    """Positions 0..n-1, no empty chunks, sizes within bounds, whitespace normalised."""
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip() and c.text == c.text.strip()
        assert text_width(c.text, cfg.cjk_width) <= cfg.chunk_size
        assert "  " not in c.text and "\n\n\n" not in c.text and "\t" not in c.text
        assert all(line == line.strip() for line in c.text.split("\n"))


def test_markdown_heading_path_is_each_chunks_section() -> None:
    md = ("Preface before any heading.\n\n# Handbook\n\nIntro text.\n\n## Leave\n\nLeave text.\n\n"
          "### Sick leave\n\nSick text.\n\n## Travel\n\nTravel text.\n\n# Appendix\n\n#### Deep\n\nDeep text.")
    chunks = split_document(doc(md), SplitConfig())
    assert [(c.section, c.text) for c in chunks] == [
        ("", "Preface before any heading."),
        ("Handbook", "Intro text."),
        ("Handbook > Leave", "Leave text."),
        ("Handbook > Leave > Sick leave", "Sick text."),
        ("Handbook > Travel", "Travel text."),
        ("Appendix > Deep", "Deep text."),
    ]


def test_paragraphs_of_one_section_stay_together_and_code_is_not_a_heading() -> None:
    md = "# Setup\n\nFirst paragraph.\n\nSecond paragraph.\n\n```\n# not a heading\nrun()\n```\n\nAfter code."
    chunks = split_document(doc(md), SplitConfig())
    assert len(chunks) == 1 and chunks[0].section == "Setup"
    assert chunks[0].text.startswith("First paragraph.\n\nSecond paragraph.\n\n```\n# not a heading")


def test_html_and_docx_sections_come_from_their_headings(tmp_path: Path) -> None:
    import docx

    (tmp_path / "p.html").write_text("<h1>Guide</h1><p>Hello.</p><h2>Install</h2><p>Run it.</p>", encoding="utf-8")
    document = docx.Document()
    document.add_heading("手册", level=1)
    document.add_heading("安装", level=2)
    document.add_paragraph("运行安装程序。")
    document.save(tmp_path / "p.docx")
    for name, expected in [("p.html", [("Guide", "Hello."), ("Guide > Install", "Run it.")]),
                           ("p.docx", [("手册 > 安装", "运行安装程序。")])]:
        loaded = load_document(tmp_path / name, max_bytes=10**6)
        assert [(c.section, c.text) for c in split_document(loaded, SplitConfig())] == expected


def test_pdf_sections_come_from_font_sizes(tmp_path: Path) -> None:
    from tests.ingest.test_loaders import make_structured_pdf

    loaded = load_document(make_structured_pdf(tmp_path / "manual.pdf"), max_bytes=10**6)
    sections = [c.section for c in split_document(loaded, SplitConfig(chunk_size=200, chunk_overlap=0))]
    assert sections[0] == "Field Safety Procedures"
    assert sections[-1] == "Field Safety Procedures > 1. Planning a trip > 1.1 Trip plan"


def test_plain_text_and_records_have_no_heading_sections(tmp_path: Path) -> None:
    chunks = split_document(doc("# not a heading in a .txt\n\nbody", fmt="text"), SplitConfig())
    assert [(c.section, c.text) for c in chunks] == [("", "# not a heading in a .txt\n\nbody")]
    records = [{"question": f"Question {i}?", "answer": english(random.Random(i), 2)} for i in range(12)]
    path = tmp_path / "faq.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    cfg = SplitConfig(chunk_size=200, chunk_overlap=0)
    chunks = split_document(load_document(path, max_bytes=10**6), cfg)
    check_invariants(chunks, cfg)
    blocks = [b for c in chunks for b in c.text.split("\n\n")]
    assert blocks == [f"question: {r['question']}\nanswer: {r['answer']}" for r in records]  # records intact


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cjk_punctuation_stays_with_the_sentence_it_ends(seed: int) -> None:
    text = chinese(random.Random(seed), 60)
    cfg = SplitConfig(chunk_size=80, chunk_overlap=16)
    chunks = split_document(doc(text, fmt="text"), cfg)
    assert len(chunks) > 5
    check_invariants(chunks, cfg)
    for c in chunks:
        assert c.text[0] not in CJK_ENDERS + "，"
        assert c.text[-1] in CJK_ENDERS + "，"  # a chunk ends where a sentence or clause ends
    sentences = re.findall(r"[^。！？；]+[。！？；]", text)
    fits = [s for s in sentences if text_width(s) <= cfg.chunk_size]
    assert all(any(s in c.text for c in chunks) for s in fits)  # a sentence that fits is never cut


@pytest.mark.parametrize(("lang", "cjk_width"), [("en", 2), ("zh", 2), ("zh", 1), ("mixed", 2)])
def test_sizes_stay_within_chunk_size_and_nothing_is_lost(lang: str, cjk_width: int) -> None:
    rng = random.Random(42)
    parts = {"en": [english(rng, 80)], "zh": [chinese(rng, 80)],
             "mixed": [english(rng, 30), chinese(rng, 30), english(rng, 30)]}[lang]
    text = "\n\n".join(parts) + "\n\n" + "x" * 400 + " " + "长" * 300  # unbreakable runs force hard splits
    cfg = SplitConfig(chunk_size=120, chunk_overlap=0, cjk_width=cjk_width)
    chunks = split_document(doc(text, fmt="text"), cfg)
    check_invariants(chunks, cfg)
    assert squash("".join(c.text for c in chunks)) == squash(text)  # no overlap: every character exactly once
    assert max(text_width(c.text, cjk_width) for c in chunks) > cfg.chunk_size * 0.7  # chunks are filled


def test_chinese_chunks_hold_half_the_characters_of_english_ones() -> None:
    rng = random.Random(7)
    cfg = SplitConfig(chunk_size=200, chunk_overlap=0)
    zh = split_document(doc(chinese(rng, 100), fmt="text"), cfg)
    en = split_document(doc(english(rng, 100), fmt="text"), cfg)
    assert max(len(c.text) for c in zh) <= cfg.chunk_size // 2
    assert max(len(c.text) for c in en) > cfg.chunk_size // 2
    wide = split_document(doc(chinese(random.Random(7), 100), fmt="text"), SplitConfig(200, 0, cjk_width=1))
    assert max(len(c.text) for c in wide) > cfg.chunk_size // 2


def shared_edge(a: str, b: str) -> int:
    """Length of the longest suffix of `a` that is a prefix of `b`."""
    return max((n for n in range(1, min(len(a), len(b)) + 1) if a.endswith(b[:n])), default=0)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_overlap_repeats_whole_sentences_from_the_previous_chunk(lang: str) -> None:
    # LangChain carries over whole pieces (here: sentences) that fit in chunk_overlap, never cut ones.
    rng = random.Random(11)
    if lang == "en":
        text = " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))).capitalize() + "."
                        for _ in range(80))
    else:
        text = "".join("".join(rng.choice(HANZI) for _ in range(rng.randint(3, 8))) + "。" for _ in range(80))
    cfg = SplitConfig(chunk_size=150, chunk_overlap=50)
    chunks = split_document(doc(text, fmt="text"), cfg)
    check_invariants(chunks, cfg)
    edges = [shared_edge(a.text, b.text) for a, b in zip(chunks, chunks[1:])]
    assert len(edges) > 5 and all(e > 0 for e in edges)
    for b, edge in zip(chunks[1:], edges):
        repeated = b.text[:edge].strip()
        assert text_width(repeated) <= cfg.chunk_overlap and repeated[-1] in ".。"  # whole sentences
    no_overlap = split_document(doc(text, fmt="text"), SplitConfig(chunk_size=150, chunk_overlap=0))
    assert sum(len(c.text) for c in chunks) > sum(len(c.text) for c in no_overlap)


def test_whitespace_is_normalised() -> None:
    messy = "# Title  \n\n\n\n  First\t\tline   with   gaps  \n\u3000\u3000中文　段落。\n\n\n\n\nLast."
    chunks = split_document(doc(messy), SplitConfig())
    assert [(c.section, c.text) for c in chunks] == [("Title", "First line with gaps\n中文 段落。\n\nLast.")]


def test_splitting_is_deterministic(tmp_path: Path) -> None:
    text = "# A\n\n" + english(random.Random(5), 40) + "\n\n## B\n\n" + chinese(random.Random(5), 40)
    cfg = SplitConfig(chunk_size=100, chunk_overlap=20)
    first = split_document(doc(text), cfg)
    assert first == split_document(doc(text), SplitConfig(chunk_size=100, chunk_overlap=20))
    assert {c.section for c in first} == {"A", "A > B"}


def test_whitespace_only_document_gives_no_chunks_and_headings_only_one_is_kept() -> None:
    assert split_document(doc(" \n\n \t"), SplitConfig()) == []
    assert split_document(doc("# Title\n\n## Sub"), SplitConfig()) == [ChunkDraft("# Title\n\n## Sub", "", 0)]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"chunk_size": 0}, "chunk_size"), ({"chunk_size": 5}, "chunk_size"), ({"chunk_size": "500"}, "chunk_size"),
    ({"chunk_size": True}, "chunk_size"), ({"chunk_overlap": -1}, "chunk_overlap"),
    ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"), ({"cjk_width": 3}, "cjk_width"),
])
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        SplitConfig(**kwargs)
    assert info.value.field == field and f"`{field}`" in str(info.value)


def test_defaults_match_the_settings() -> None:
    from ragtune.settings import Settings

    settings = Settings()
    cfg = SplitConfig()
    assert (cfg.chunk_size, cfg.chunk_overlap) == (settings.chunk_size, settings.chunk_overlap)
