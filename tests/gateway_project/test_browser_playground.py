"""The tool playground in a real browser (Debian's Chromium, headless, through Playwright, as in
test_browser.py), against a live daphne gateway: a staff user runs a slow function tool from its
"Test call" page and watches the progress bar move and the log fill while the call runs, then the result
appear in the same page (no reload); a second call, started from the keyboard, is stopped half way, and
the function in the gateway process sees its cancellation. Screenshots in test-artifacts/screenshots/:
playground-progress.png (during the call), playground-progress-done.png and playground-progress-dark.png
(the finished page, light and dark)."""

from __future__ import annotations

import time

from tests.gateway_project.test_browser import browser, shot  # noqa: F401
from tests.live_gateway import ADMIN_PASSWORD, start_live_gateway

TOOL = "tests.fixtures.playground_tools.count_slowly"
# Records every value the progress bar takes (the script sets its `value` attribute per progress event).
WATCH_PROGRESS = """() => {
  window.sameDocument = true;
  window.progressValues = [];
  const bar = document.getElementById("call-progress");
  new MutationObserver(() => {
    if (bar.hasAttribute("value")) { window.progressValues.push(Number(bar.value)); }
  }).observe(bar, {attributes: true, attributeFilter: ["value"]});
}"""


def test_the_playground_shows_progress_as_it_arrives_then_the_result(browser, tmp_path):  # noqa: F811
    marker = tmp_path / "cancelled"
    with start_live_gateway(
        tmp_path,
        GATEWAY_FUNCTION_TOOLS="tests.fixtures.playground_tools.*",
        PLAYGROUND_CANCELLED_MARKER=str(marker),
    ) as gateway:
        status, created = gateway.api(
            "POST",
            "/api/tools",
            {"name": "count_slowly", "integration_type": "function", "backend_config": {"function": TOOL}},
        )
        assert status == 201, created
        assert isinstance(created, dict)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(gateway.url + f"/admin/login/?next=/admin/registry/tool/{created['id']}/test-call/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"**/admin/registry/tool/{created['id']}/test-call/")

        # The form made from the derived schema: the required argument marked, the Literal as a select.
        page.get_by_label("steps (required):").fill("4")
        page.get_by_label("pause:").fill("0.6")
        page.get_by_label("unit:").select_option(label="laps")
        page.evaluate(WATCH_PROGRESS)
        page.get_by_role("button", name="Call the tool").click()

        # While the tool runs: the bar has moved, its status says how far, the log has lines, no result yet.
        page.wait_for_function("document.getElementById('call-progress').value >= 2", timeout=15000)
        assert page.locator("#call-result").count() == 0
        assert "Counted" in page.locator("#call-status").inner_text()
        assert page.locator("#call-log li").count() >= 2
        bar = page.locator("#call-progress")
        assert bar.get_attribute("aria-valuemax") == "4"
        assert "of 4" in (bar.get_attribute("aria-valuetext") or "")
        assert page.get_by_role("button", name="Call the tool").get_attribute("aria-disabled") == "true"
        shot(page, "playground-progress")

        # Then the result, swapped into the same page.
        page.locator("#call-result").wait_for(timeout=15000)
        assert page.evaluate("window.sameDocument === true")  # streamed in place, not a page load
        assert page.evaluate("window.progressValues") == [1, 2, 3, 4]
        assert page.locator("#call-log li").count() == 4
        assert "Result" in page.inner_text("#call-result h2")
        assert '"counted": 4' in page.inner_text("#structured-content")
        assert "Done." in page.locator("#call-status").inner_text()
        shot(page, "playground-progress-done")
        page.emulate_media(color_scheme="dark")  # the admin's dark mode: its colours, not fixed ones
        shot(page, "playground-progress-dark")
        page.emulate_media(color_scheme="light")

        # A call stopped half way: the browser closes the stream, the page says so and is ready again, and
        # the gateway cancels the function (it would count on for half a minute otherwise).
        page.get_by_label("steps (required):").fill("50")
        page.get_by_label("steps (required):").press("Enter")  # from the keyboard this time
        page.wait_for_function("document.getElementById('call-progress').value >= 1", timeout=15000)
        page.get_by_role("button", name="Stop the call").click()
        page.wait_for_function("document.getElementById('call-status').textContent.includes('Stopped')")
        assert page.locator("#call-result").count() == 0
        assert page.get_by_role("button", name="Call the tool").get_attribute("aria-disabled") is None
        assert page.evaluate("document.activeElement.value") == "Call the tool"  # focus kept for the keyboard
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline, "the gateway did not cancel the stopped call"
            time.sleep(0.1)
        assert marker.read_text().startswith("cancelled at step ")
        page.close()
