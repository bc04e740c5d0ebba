"""The console's security-event view in headless Debian Chromium: the count of new events,
the list with its ATT&CK technique and request line, and triage from the page — acknowledge,
dismiss, and an exclusion written into the workload's WebApplicationFirewall."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.server.conftest import ServerProcess
from tests.server.test_console import CHROMIUM, CHROMIUM_ARGS
from tests.server.test_events_api import FIREWALL, POD, waf_event


def test_console_lists_and_triages_security_events(server_process: ServerProcess) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make system-deps` installs it", pytrace=False)
    server_process.start()
    api = f"{server_process.url}/api/v1"
    applied = httpx.post(f"{api}/apply", content=yaml.safe_dump_all([POD, FIREWALL]))
    assert applied.status_code == 200, applied.text
    now = time.time()
    events = [waf_event(i, time=now - 60 + i) for i in (1, 2, 3)]  # inside the page's window
    assert httpx.post(f"{api}/events", json=events).json()["stored"] == 3

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server_process.url)
            page.wait_for_function(
                "() => document.getElementById('event-count').textContent === '(3 new)'"
            )
            page.click("#events")
            page.wait_for_selector("table.events tbody tr")
            ids = page.eval_on_selector_all(
                "table.events tbody tr", "r => r.map(x => x.dataset.id)"
            )
            assert ids == ["ev-3", "ev-2", "ev-1"]
            details = page.inner_text("#details")
            assert "T1190 (Initial Access)" in details
            assert "GET /search?q=1%27+or+1=1 HTTP/1.1" in details
            assert "shop/frontend-0" in details

            page.click("tr[data-id=ev-3] button[data-action=acknowledge]")
            page.wait_for_selector("tr[data-id=ev-3].acknowledged")
            page.wait_for_function(
                "() => document.getElementById('event-count').textContent === '(2 new)'"
            )

            page.click("tr[data-id=ev-2] button[data-action='exclude rule here']")
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('exclusion added')"
            )
            firewall = httpx.get(f"{api}/resources/WebApplicationFirewall/shop/frontend").json()
            assert firewall["spec"]["exclusions"][0]["ruleIds"] == ["942100"]
            assert firewall["spec"]["exclusions"][0]["paths"] == ["/search"]

            page.click("tr[data-id=ev-1] button[data-action=dismiss]")
            page.wait_for_function(
                "() => !document.querySelector('tr[data-id=ev-1]')"
                " && document.querySelectorAll('table.events tbody tr').length === 2"
            )
            assert "Security events: 2" in page.inner_text("#details-title")
            assert errors == []
        finally:
            browser.close()


def test_console_changes_waf_settings(server_process: ServerProcess) -> None:
    from playwright.sync_api import sync_playwright

    server_process.start()
    api = f"{server_process.url}/api/v1"
    firewall = {
        **FIREWALL,
        "spec": {
            **FIREWALL["spec"],
            "exclusions": [{"ruleIds": [942100], "paths": ["/search"]}, {"tags": ["attack-xss"]}],
        },
    }
    assert httpx.post(f"{api}/apply", content=yaml.safe_dump_all([POD, firewall])).is_success

    def stored() -> dict[str, object]:
        return httpx.get(f"{api}/resources/WebApplicationFirewall/shop/frontend").json()["spec"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server_process.url)
            page.click("#waf")
            row = "table.firewalls tr[data-name='shop/frontend']"
            page.wait_for_selector(row)
            assert page.eval_on_selector(f"{row} select[name=mode]", "s => s.value") == "On"
            assert len(page.query_selector_all(f"{row} .exclusion")) == 2
            page.select_option(f"{row} select[name=mode]", "DetectionOnly")
            page.select_option(f"{row} select[name=paranoiaLevel]", "2")
            page.click(f"{row} button:text('save')")
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('saved')"
            )
            spec = stored()
            assert (spec["mode"], spec["paranoiaLevel"]) == ("DetectionOnly", 2)
            page.wait_for_selector(f"{row} .exclusion")
            page.click(f"{row} .exclusion:first-child button")
            page.wait_for_function(
                f'() => document.querySelectorAll("{row} .exclusion").length === 1'
            )
            assert stored()["exclusions"] == [
                {"ruleIds": [], "tags": ["attack-xss"], "targets": [], "paths": []}
            ]
            assert stored()["mode"] == "DetectionOnly"
            assert errors == []
        finally:
            browser.close()
