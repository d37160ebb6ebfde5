"""Headless Chromium (Debian's system browser, driven by playwright; nothing downloaded) loads
the UI, asks a question with RAG on, and sees the answer, its sources and the chunk text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.ui.conftest import Stack

pytestmark = pytest.mark.integration  # a live server (uvicorn, a browser)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page(ui_stack: Stack):
    if not CHROMIUM.exists():  # CI installs it: a missing browser fails, never skips
        pytest.fail("Debian's chromium is not installed (/usr/bin/chromium): "
                    "apt-get install -y chromium", pytrace=False)
    from playwright import sync_api  # a dev dependency: missing means a broken setup
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_ask_with_rag_shows_answer_sources_and_folded_reasoning(
        page, ui_stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(ui_stack.ui_url)
    expect(page.locator("#rt-api-status")).to_contain_text("API", timeout=30_000)
    expect(page.locator("#rt-use-rag input[type=checkbox]")).to_be_checked()
    page.locator("#rt-question textarea").fill("How many days of annual leave do we get?")
    page.locator("#rt-send").click()
    chat = page.locator("#rt-chatbot")
    expect(chat).to_contain_text("Employees get 25 days of annual leave [1]")
    expect(chat).to_contain_text("Sources (2)")
    summary = chat.locator("details.rt-source summary").first
    expect(summary).to_contain_text("leave.md")
    expect(summary).to_contain_text("score")
    chunk = chat.locator("details.rt-source .rt-chunk").first
    expect(chunk).to_be_hidden()  # the chunk text is folded until the source is expanded
    summary.click()
    expect(chunk).to_be_visible()
    expect(chunk).to_contain_text("25 days of annual leave per calendar year")
    expect(chat).to_contain_text("Reasoning")
    expect(chat.get_by_text("checking passage 1 with base")).to_be_hidden()  # folded away
    shot = tmp_path / "chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep = ui_stack.root / "screenshots"
    keep.mkdir(exist_ok=True)
    shutil.copy(shot, keep / "chat.png")
    print(f"screenshot: {shot}")
