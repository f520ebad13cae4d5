"""``/docs`` works with no internet: Swagger UI's assets come from the server itself (the
installed ``swagger-ui-bundle`` package), and the page shows the allocate operation in
headless Chromium (``.ci/ensure-test-tools`` installs Debian's chromium)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bandit.serving.app import create_app
from bandit.serving.live import LiveServer
from tests import test_dashboard_browser as browser_test
from tests.test_dashboard_browser import CHROMIUM, Browser
from tests.test_serve import ListSink, base_arms, make_config

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "docs"


@pytest.fixture(scope="module")
def docs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_app(make_config(tmp_path_factory.mktemp("docs")), arms=base_arms(),
                     sink=ListSink())
    with LiveServer(app) as server:
        yield server.url


def test_docs_page_and_its_assets_come_from_the_server(docs_url: str) -> None:
    page = httpx.get(docs_url + "/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # every script, stylesheet and icon the page names is served here, none from a CDN
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert refs and all(ref.startswith("/docs/static/") for ref in refs), refs
    assert not re.search(r"https?://", page.text.replace(docs_url, "")), page.text
    for ref in refs:
        asset = httpx.get(docs_url + ref)
        assert asset.status_code == 200 and asset.content, ref
    assert httpx.get(docs_url + "/openapi.json").status_code == 200


@pytest.mark.browser
def test_docs_show_the_allocate_operation_offline_in_chromium(
    docs_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} missing: run .ci/ensure-test-tools")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # offline: no host name resolves, only this server's address is reachable
    monkeypatch.setattr(browser_test, "_FLAGS", [
        *browser_test._FLAGS, "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"])
    with tempfile.TemporaryDirectory(prefix="sb-chromium-") as profile:
        browser = Browser(Path(profile))
        try:
            browser.call("Page.enable")
            browser.call("Page.navigate", url=docs_url + "/docs")
            selector = '.opblock-summary-path[data-path="/v1/allocate"]'
            deadline = time.monotonic() + 60
            shown = False
            while time.monotonic() < deadline and not shown:
                shown = bool(browser.evaluate(f"!!document.querySelector('{selector}')"))
                if not shown:
                    time.sleep(0.25)
            browser.screenshot(ARTIFACTS / "docs.png")
            assert shown, "the allocate operation did not render (see test-artifacts/docs)"
            resources = browser.evaluate(
                "performance.getEntriesByType('resource').map(e => e.name)")
            assert resources and all(r.startswith(docs_url) for r in resources), resources
            text = browser.evaluate("document.body.innerText")
            assert "/v1/feedback" in text and "/v1/exposures" in text
        finally:
            browser.close()
