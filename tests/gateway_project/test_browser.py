"""The gateway in a real browser: Debian's Chromium (installed by `make system-deps`), driven headless by
Playwright for Python through `executable_path` (no `playwright install`), against a live gateway process
with its in-process scheduler. Screenshots of each page go to test-artifacts/screenshots/.

A staff user signs in, registers an upstream with the connection test (what it is and what it would add,
then stored), syncs it from its page, composes a virtual server with the composer's preview, issues a
token bound to it (which opens that server only) and revokes it, runs tools from the playground, sees the
landing page list the virtual server and its upstream healthy, the admin's gateway list, and the dashboard
on the admin index with the calls just made; the upstream is stopped and the dashboard shows it
unreachable with the reason without the page being reloaded. Anyone else sees only the endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.servers import start_upstream
from tests.live_gateway import ADMIN_PASSWORD, start_live_gateway
from tests.transports.test_bound_tokens import post_mcp

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
PETS_OPENAPI = (
    '{"openapi": "3.1.0", "info": {"title": "Pets", "version": "1"}, "servers": [{"url": "http://127.0.0.1:9/v1"}],'
    ' "paths": {"/pets": {"get": {"operationId": "listPets", "responses": {"200": {"description": "the pets"}}}}}}'
)
CHROMIUM = Path("/usr/bin/chromium")
# Chromium's background services dial out at start; this machine's network refuses them (and CI has none).
QUIET = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    # The admin's CSS and the dashboard's htmx are static files, which the gateway (WhiteNoise) serves from
    # STATIC_ROOT as `make run` collects it: collect them before any gateway of this module starts.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "gateway_project.settings"},
        check=True,
        timeout=120,
    )
    if not CHROMIUM.exists():
        pytest.fail("the browser tests need Debian's chromium: run `make system-deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=QUIET)
        yield launched
        launched.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_staff_see_the_catalog_and_an_upstream_turning_unreachable(browser, tmp_path):
    upstream = start_upstream("streamable-http")
    try:
        with start_live_gateway(
            tmp_path,
            GATEWAY_SCHEDULER="inprocess",
            GATEWAY_SCHEDULER_TICK="0.3",
            GATEWAY_HEALTH_INTERVAL="1",
            GATEWAY_HEALTH_FAILURES="2",
        ) as gateway:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(gateway.url + "/")
            assert "Sign in" in page.inner_text("main")  # anonymous: endpoints only
            page.goto(gateway.url + "/admin/login/?next=/admin/registry/gateway/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(gateway.url + "/admin/registry/gateway/")

            # Register with a connection test: what the upstream is and would add, then store it.
            page.get_by_role("link", name="Register with a connection test").click()
            page.get_by_label("Name:", exact=True).fill("fx")
            page.get_by_label("URL:", exact=True).fill(upstream.url)
            page.get_by_role("button", name="Test connection").click()
            report = page.locator("#connection-report").inner_text()
            assert "gateway-upstream-fixture" in report
            assert "test_simple_text" in report
            shot(page, "register-connection-test")
            page.get_by_role("button", name="Register").click()
            page.wait_for_url("**/admin/registry/gateway/*/change/")
            assert "Registered 'fx'" in page.inner_text("body")

            # Sync it now: the result appears on the gateway's page without leaving it.
            page.get_by_role("button", name="Sync now").click()
            result = page.locator("#gateway-operation-result")
            result.get_by_text("Synced 'fx'").wait_for()
            assert "0 added" in result.inner_text()  # registering read the catalog already
            shot(page, "gateway-sync-now")

            # Compose a virtual server from the whole gateway; the preview shows the tools a client will see.
            page.goto(gateway.url + "/admin/")
            page.get_by_role("link", name="Compose a virtual server").click()
            page.get_by_label("Name:", exact=True).fill("demo")
            page.get_by_label("Search").fill("fx")
            candidate = page.locator("#composer-candidates input[id^='pick-gateway-']")
            candidate.wait_for()
            candidate.check()
            page.locator("#composer-chosen").get_by_text("fx", exact=True).wait_for()
            page.locator("#preview-tools").get_by_text("test_simple_text", exact=True).wait_for()
            shot(page, "composer-preview")
            page.get_by_role("button", name="Save").click()
            page.get_by_text("Saved the virtual server demo").wait_for()

            # Issue a token bound to the server: shown once, it opens that server and nothing else; revoked, it
            # opens nothing (after the edge's one-second credential cache).
            page.goto(gateway.url + "/admin/")
            page.get_by_role("link", name="Issue a token").click()
            users = page.locator("#id_user option").all_inner_texts()
            page.select_option("#id_user", label=next(text for text in users if text.startswith("admin ")))
            page.get_by_label("Name:", exact=True).fill("browser test")
            page.check("input[name=scopes][value=read]")
            page.check("input[name=scopes][value=call]")
            page.select_option("#id_server", label="demo")
            page.get_by_role("button", name="Issue the token").click()
            token = page.locator("#issued-token").input_value()
            shot(page, "token-issued")
            assert post_mcp(gateway, "/servers/demo/mcp", token).status_code == 200
            assert post_mcp(gateway, "/mcp", token).status_code == 403
            page.goto(gateway.url + "/admin/registry/issuedtoken/")
            assert token not in page.content()  # never shown again
            page.get_by_role("link", name="browser test").click()
            page.locator("#revoke-token").click()
            page.get_by_role("button", name="Yes, revoke it").click()
            page.wait_for_load_state()
            page.goto(gateway.url + "/admin/registry/issuedtoken/")
            assert "revoked" in page.inner_text("#result_list")
            shot(page, "token-list-revoked")
            deadline = time.monotonic() + 15
            while post_mcp(gateway, "/servers/demo/mcp", token).status_code != 401:
                assert time.monotonic() < deadline, "the revoked token kept working"
                time.sleep(0.5)

            # The playground: a tool's test call, its arguments as fields, its image shown as an image.
            page.goto(gateway.url + "/admin/registry/tool/?q=test_image_content")
            page.get_by_role("link", name="test_image_content", exact=True).click()
            page.get_by_role("link", name="Test call").click()
            page.get_by_role("button", name="Call the tool").click()
            page.locator("#call-result").wait_for()  # the answer's page has loaded
            assert page.locator("#call-contents img").count() == 1
            assert "Result" in page.inner_text("#call-result h2")
            shot(page, "playground-image")
            page.goto(gateway.url + "/admin/registry/tool/?q=echo")
            page.get_by_role("link", name="echo", exact=True).click()
            page.get_by_role("link", name="Test call").click()
            page.get_by_label("message (required):").fill("hello from the browser")
            page.get_by_role("button", name="Call the tool").click()
            assert "hello from the browser" in page.inner_text("#call-contents")

            page.goto(gateway.url + "/")
            main = page.inner_text("main")
            assert f"{gateway.url}/servers/demo/mcp" in main
            assert "Healthy" in main
            shot(page, "landing-page")
            page.goto(gateway.url + "/admin/registry/gateway/")
            assert "Healthy" in page.inner_text("#result_list")
            shot(page, "gateway-list-healthy")

            # The catalog's own admin pages (one form fragment, templates/admin/_form_rows.html): export, import
            # with its preview before anything changes, and tools from an OpenAPI document (a dry run first).
            page.goto(gateway.url + "/admin/catalog/export/")
            shot(page, "catalog-export")
            with page.expect_download() as download:
                page.get_by_role("button", name="Download the export").click()
            exported = Path(download.value.path()).read_text()
            assert '"demo"' in exported
            page.goto(gateway.url + "/admin/catalog/import/")
            page.get_by_label("Or paste the JSON").fill(exported)
            page.get_by_role("button", name="Preview the import").click()
            assert "Nothing has changed yet" in page.inner_text("#content-main")
            shot(page, "catalog-import-preview")
            page.goto(gateway.url + "/admin/registry/tool/import-openapi/")
            page.set_input_files(
                "#id_file",
                files=[{"name": "pets.json", "mimeType": "application/json", "buffer": PETS_OPENAPI.encode()}],
            )
            page.get_by_role("button", name="Import").click()
            assert "listPets" in page.inner_text("#content-main")
            shot(page, "openapi-import-dry-run")

            # The dashboard on the admin index follows the upstream's health with no reload (HTMX polling).
            page.goto(gateway.url + "/admin/")
            panel = page.locator("#gateway-health")
            assert "Healthy" in panel.inner_text()
            page.locator("#traffic-panel").get_by_text("echo", exact=True).wait_for()  # the playground's calls
            shot(page, "dashboard-healthy")
            page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
            upstream.stop()
            deadline = time.monotonic() + 60
            while "Unreachable" not in page.locator("#gateway-health").inner_text():
                assert time.monotonic() < deadline, "the dashboard never showed the upstream unreachable"
                time.sleep(0.5)
            assert page.evaluate("window.sameDocument === true")  # updated in place, not reloaded
            assert "connection refused by 127.0.0.1" in page.locator("#gateway-health").inner_text()
            shot(page, "dashboard-unreachable")
            page.close()
    finally:
        upstream.stop()
