"""The console in a real browser: headless Debian Chromium, driven by Playwright, against a
running `palisade server` holding flows of two namespaces. It loads the service graph (namespace
level), expands a namespace into its workloads, opens the flows of a denied edge, and the page
shows them with the policy that denied them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from palisade.flows import FlowRecord
from palisade.server._client import encode_records
from tests.server.conftest import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _flow(source: tuple[str, str], dest: tuple[str, str], action: str, policy: str) -> FlowRecord:
    now = int(time.time())
    return FlowRecord(
        start_time=now - 30,
        end_time=now - 15,
        action=action,  # type: ignore[arg-type]
        reporter="dst",
        proto="tcp",
        source_name_aggr=f"{source[1]}-*",
        source_namespace=source[0],
        source_type="wep",
        dest_name_aggr=f"{dest[1]}-*",
        dest_namespace=dest[0],
        dest_type="wep",
        dest_port=5432 if dest[1] == "postgres" else 8080,
        enforced_policies=(f"0|default|{policy}|{action}|{0 if action == 'allow' else -1}",),
        bytes_in=1200,
        bytes_out=800,
        packets_in=10,
        packets_out=8,
        num_flows=3,
        num_flows_started=3,
        num_flows_completed=3,
        host="node-0",
    )


FLOWS = [
    _flow(("shop", "web"), ("shop", "api"), "allow", "knp:shop/api"),
    _flow(("shop", "api"), ("data", "postgres"), "allow", "knp:data/stores"),
    _flow(("shop", "batch"), ("data", "postgres"), "deny", "knp:data/default-deny"),
]


def test_console_draws_expands_and_lists_an_edges_flows(server_process: ServerProcess) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make system-deps` installs it", pytrace=False)

    server_process.start()
    answer = httpx.post(
        f"{server_process.url}/api/v1/flows/ingest",
        content=encode_records(FLOWS),
        headers={"X-Palisade-Batch": "console-test"},
    )
    assert answer.status_code == 200 and answer.json()["imported"] == 3

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server_process.url)
            page.wait_for_selector("body[data-ready=true]", state="attached", timeout=20_000)
            kinds = page.eval_on_selector_all(
                "#node-list tr", "rows => rows.map(r => [r.dataset.kind, r.textContent])"
            )
            assert sorted(kind for kind, _ in kinds) == ["namespace", "namespace"], kinds
            assert "2 nodes" in page.inner_text("#status")

            # expand the data namespace: its workload appears, the shop namespace stays whole
            data_id = next(text for kind, text in kinds if "data" in text)
            page.evaluate("id => window.palisade.state.cy.getElementById(id).emit('tap')", data_id)
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('expanded: data')"
            )
            rows = page.eval_on_selector_all(
                "#node-list tr", "rows => rows.map(r => [r.dataset.kind, r.textContent])"
            )
            workloads = [text for kind, text in rows if kind == "workload"]
            assert len(workloads) == 1 and "postgres" in workloads[0], rows

            # open the flows of the edge shop → postgres: one allowed and one denied record of
            # three connections each
            edge = page.evaluate(
                """() => {
                  const edges = window.palisade.state.cy.edges().filter(e => e.data('denied') > 0);
                  edges[0].emit('tap');
                  return edges.map(e => e.data());
                }"""
            )
            assert len(edge) == 1 and edge[0]["allowed"] == 3 and edge[0]["denied"] == 3, edge
            page.wait_for_selector("#details-body table.flows tbody tr")
            details = page.inner_text("#details")
            assert "3 allowed, 3 denied" in details
            assert page.eval_on_selector_all("#details-body tbody tr", "rows => rows.length") == 2
            assert "knp:data/default-deny" in details and "deny" in details
            assert "knp:data/stores" in details

            # what if the staged policies were enforced? (none are staged here: nothing changes)
            page.click("#whatif")
            page.wait_for_selector("#details-body table.whatif")
            assert "0 flow(s) would be denied" in page.inner_text("#details-title")
            assert errors == []
        finally:
            browser.close()
