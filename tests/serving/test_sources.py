"""Sources carry where each passage came from: a PDF's page (and OCR), a CSV's rows, the heading path,
through a real ingest and index into the /ask body and its response schema."""

from __future__ import annotations

from pathlib import Path

from api.schemas import AskResponse
from ingest.pipeline import ingest_documents
from ragtune.settings import load_settings
from retrieval.index import open_index
from serving.assistant import Assistant
from serving.config import AssistantConfig
from tests.fakes import EchoGenerator, HashEmbedder


def two_page_manual(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    for title, body in [("Setup", "Mount the Skerrow S3 mast on a level concrete base."),
                        ("Calibration", "The Skerrow S3 barometer is recalibrated every 24 months.")]:
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=16)
        pdf.multi_cell(0, 9, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 6, body, new_x="LMARGIN", new_y="NEXT")
        for n in range(4):  # body text, so the larger title lines read as headings
            pdf.multi_cell(0, 6, f"Note {n}: keep the station log up to date.", new_x="LMARGIN", new_y="NEXT")
    path.write_bytes(bytes(pdf.output()))
    return path


def test_ask_sources_cite_the_page_and_rows(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    two_page_manual(docs / "manual.pdf")
    (docs / "parts.csv").write_text("part,stock\nbarometer,4\nmast,2\n", encoding="utf-8")
    settings = load_settings(workspace=tmp_path / "ws")
    emb = HashEmbedder(64)
    assert not ingest_documents([Path("docs")], settings, embedder=emb, progress=False).failed
    with open_index(settings, emb) as index:
        answer = Assistant(EchoGenerator(), index, AssistantConfig(top_k=5)).ask(
            "How often is the Skerrow S3 barometer recalibrated?")
    body = AskResponse.model_validate(answer.to_dict()).model_dump()
    by_text = {s["text"]: s for s in body["sources"]}
    page2 = next(s for t, s in by_text.items() if "recalibrated every 24 months" in t)
    assert (page2["page"], page2["section"], page2["ocr"]) == (2, "Calibration", False)
    assert page2["citation"] == "manual.pdf, p. 2, § Calibration"
    rows = next(s for s in body["sources"] if s["source"] == "docs/parts.csv")
    assert (rows["row_start"], rows["row_end"], rows["page"]) == (2, 3, None)
    assert rows["citation"] == "parts.csv, rows 2-3"
