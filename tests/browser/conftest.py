"""A real stack (gunicorn, worker, beat) and headless Debian Chromium, driven by Playwright.

Chromium is the system one (/usr/bin/chromium, `apt-get install chromium`); Playwright
never downloads a browser here. A failing test leaves a screenshot in var/test-screenshots/.
"""

import os
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from mlsite import broker
from mlsite.scheduler import HEARTBEAT_KEY
from tests import processes

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# between browser steps are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = processes.ROOT / "var" / "test-screenshots"
DOCS = processes.ROOT / "docs"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="module")
def live_beat(live_web: str, live_worker: object, django_db_blocker) -> Iterator[None]:
    """Beat for this module only: other tests expect no heartbeat in the shared Redis."""
    with django_db_blocker.unblock():
        beat = processes.start_beat()
    try:
        processes.wait_for(lambda: broker.client().exists(HEARTBEAT_KEY), 30, "beat heartbeat")
        yield
    finally:
        processes.stop(beat)
        broker.client().delete(HEARTBEAT_KEY)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, live_web: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from _page_on(live_web, browser, request)


@pytest.fixture
def page_on_a_new_web(
    browser: Browser, request: pytest.FixtureRequest, django_db_blocker
) -> Iterator[Page]:
    """A page on a web process started for this test, for one that adds a row the shared web
    process has added before: Django caches content type ids per process (the admin's history
    names one), and the flush between tests gives the table new ones."""
    port = processes.free_port()
    with django_db_blocker.unblock():
        web = processes.start_web(port)
    try:
        yield from _page_on(f"http://127.0.0.1:{port}", browser, request)
    finally:
        processes.stop(web)


def _page_on(url: str, browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(
        base_url=url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    context.close()


def save_docs_screenshot(page: Page, name: str) -> None:
    """With SAVE_DOCS_SCREENSHOTS=1, keeps what a new user sees as docs/<name>.png."""
    if os.environ.get("SAVE_DOCS_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)


def sign_in(page: Page, username: str, password: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def staff_password(username: str) -> str:
    return "pw-" + username  # tests.base.make_user's convention
