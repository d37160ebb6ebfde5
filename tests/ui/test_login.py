"""The UI behind the API's keys, through a real headless Chromium: a visitor signs in with
their own key (the UI holds none), an `ask` key sees Chat and Compare only and its question is
answered with that key, an `admin` key also gets Documents, Fine-tune and Eval; a wrong key or a
name held by another key is refused; the UI will not publish itself without keys."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragtune.errors import ConfigError
from tests.ui.conftest import EMBEDDER, ReasoningEcho, api_app, write_docs, write_finetune_config
from tests.ui.test_browser import ARGS, CHROMIUM

ASK_KEY, ADMIN_KEY = "ask-key-for-the-ui", "admin-key-for-the-ui"


@dataclass
class Guarded:
    ui_url: str
    api_url: str
    visitors: object
    generator: ReasoningEcho


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    from ingest.pipeline import ingest_documents
    from ragtune.settings import load_settings
    from retrieval.index import open_index
    from ui.app import build_ui, launch_options
    from ui.auth import LOGIN_MESSAGE, Visitors
    from ui.serving import free_port, serve_in_thread

    root = tmp_path_factory.mktemp("login")
    workspace, docs = root / "workspace", write_docs(root / "docs")
    write_finetune_config(root)
    keys = {ASK_KEY: "ask", ADMIN_KEY: "admin"}
    settings = load_settings(workspace=workspace, embedder=EMBEDDER, top_k=2, api_keys=keys)
    ingest_documents([docs], settings, progress=False)
    index, generator = open_index(settings), ReasoningEcho()
    api = serve_in_thread(api_app(settings, generator, index))
    ui_settings = load_settings(workspace=workspace, embedder=EMBEDDER, api_url=api.url)
    visitors = Visitors(api.url)
    demo = build_ui(ui_settings, root=root, visitors=visitors)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), ssr_mode=False, quiet=True,
                            auth=visitors.login, auth_message=LOGIN_MESSAGE, **launch_options())
    try:
        yield Guarded(url.rstrip("/"), api.url, visitors, generator)
    finally:
        demo.close()
        api.stop()
        index.close()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), "Debian's chromium is needed: apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(browser, url: str, name: str, key: str):
    """A fresh browser context (own cookies) signed in through Gradio's login form."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    expect(page.get_by_text("Sign in with your ragtune API key")).to_be_visible()
    page.locator("input[type=text]").first.fill(name)
    page.locator("input[type=password]").fill(key)
    page.get_by_role("button", name="Login").click()
    return context, page


@pytest.mark.integration
def test_ask_key_sees_chat_and_compare_only(browser, guarded: Guarded) -> None:
    from playwright.sync_api import expect

    context, page = sign_in(browser, guarded.ui_url, "asker", ASK_KEY)
    try:
        expect(page.locator("#rt-api-status")).to_contain_text("signed in: ask key")
        for visible in ("Chat", "Compare"):
            expect(page.get_by_role("tab", name=visible)).to_be_visible()
        for hidden in ("Documents", "Fine-tune", "Eval"):
            expect(page.get_by_role("tab", name=hidden)).to_be_hidden()
        page.locator("#rt-question textarea").fill("How many days of annual leave?")
        page.locator("#rt-send").click()  # answered only because the UI sent the ask key
        expect(page.locator("#rt-chatbot")).to_contain_text("Employees get 25 days")
    finally:
        context.close()


@pytest.mark.integration
def test_admin_key_sees_every_tab_and_the_documents(browser, guarded: Guarded) -> None:
    from playwright.sync_api import expect

    context, page = sign_in(browser, guarded.ui_url, "admin", ADMIN_KEY)
    try:
        expect(page.locator("#rt-api-status")).to_contain_text("signed in: admin key")
        for visible in ("Chat", "Compare", "Documents", "Fine-tune", "Eval"):
            expect(page.get_by_role("tab", name=visible)).to_be_visible()
        page.get_by_role("tab", name="Documents").click()
        expect(page.get_by_text("leave.md").first).to_be_visible()
    finally:
        context.close()


@pytest.mark.integration
def test_wrong_key_and_a_taken_name_are_refused(browser, guarded: Guarded) -> None:
    from playwright.sync_api import expect

    for name, key in (("mallory", "not-a-key"), ("asker", ADMIN_KEY)):
        context, page = sign_in(browser, guarded.ui_url, name, key)
        try:
            expect(page.get_by_text("Incorrect credentials")).to_be_visible()
            expect(page.locator("#rt-api-status")).to_have_count(0)
        finally:
            context.close()


def test_the_ui_holds_no_key_and_refuses_to_publish_without_keys(guarded: Guarded) -> None:
    from ui.auth import check_exposure

    assert guarded.visitors.key() is None  # outside a signed-in request: no key at all
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(host, share=False, api_has_keys=False)
    with pytest.raises(ConfigError, match="share"):
        check_exposure("127.0.0.1", share=True, api_has_keys=False)
    with pytest.raises(ConfigError, match="RAGTUNE_API_KEYS"):
        check_exposure("0.0.0.0", share=False, api_has_keys=False)
    check_exposure("0.0.0.0", share=True, api_has_keys=True)


def test_ui_command_refuses_0_0_0_0_without_keys(tmp_path: Path) -> None:
    from ui.commands import ui

    with pytest.raises(ConfigError, match="host"):
        ui(host="0.0.0.0", workspace=tmp_path / "ws", with_api=True)


def test_serve_warns_beyond_loopback_without_keys() -> None:
    from api.commands import exposure_warning

    assert "WITHOUT API keys" in exposure_warning("0.0.0.0", auth_enabled=False)
    assert exposure_warning("0.0.0.0", auth_enabled=True) is None
    assert exposure_warning("127.0.0.1", auth_enabled=False) is None


@pytest.mark.integration
def test_admin_handlers_refuse_an_ask_key_even_called_directly(guarded: Guarded) -> None:
    from gradio_client import Client

    from tests.ui.test_finetune_board import KNOB_VALUES
    from ui.runs import KNOBS

    asker = Client(guarded.ui_url, auth=("direct-asker", ASK_KEY), verbose=False)
    status, _ = asker.predict("configs/finetune/tiny.yaml", *[KNOB_VALUES[k] for k in KNOBS],
                              api_name="/finetune_start")
    assert status.startswith("⚠️") and "needs an `admin` API key" in status
    summary, *_ = asker.predict(api_name="/eval")
    assert "needs an `admin` API key" in summary
