"""`palisade waf proxy`: the WAF inline in front of one workload, without Envoy."""

from __future__ import annotations

import logging
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from palisade.model import WebApplicationFirewallSpec

from ._common import datastore_url, err_console, fail


class Mode(StrEnum):
    detection_only = "DetectionOnly"
    on = "On"
    off = "Off"


def _address(option: str, text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"{option} {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def proxy(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")],
    upstream: Annotated[str, typer.Option("--upstream", help="HOST:PORT of the workload.")],
    rules: Annotated[
        Path | None,
        typer.Option("--rules", help="The OWASP CRS folder (default: $PALISADE_CRS_DIR, …)."),
    ] = None,
    mode: Annotated[
        Mode, typer.Option("--mode", help="Without a datastore: the engine's mode.")
    ] = Mode.detection_only,
    paranoia: Annotated[
        int, typer.Option("--paranoia", min=1, max=4, help="Without a datastore: PL 1-4.")
    ] = 1,
    datastore: Annotated[
        str | None,
        typer.Option(
            "--datastore",
            help="Follow the WebApplicationFirewall that selects --namespace/--pod here.",
        ),
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    pod: Annotated[str | None, typer.Option("--pod", help="The protected pod's name.")] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Send Security Events to this server.")
    ] = None,
    events_log: Annotated[
        Path | None, typer.Option("--events-log", help="Also append events here (JSON lines).")
    ] = None,
    fail_closed: Annotated[
        bool, typer.Option("--fail-closed", help="Answer 503 when the engine fails.")
    ] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 1,
    inspect_responses: Annotated[bool, typer.Option("--inspect-responses")] = False,
) -> None:
    """Reverse proxy with the WAF: inspect each request (and optionally each response) with
    the OWASP CRS, block or detect, and report Security Events. Prints ``ready`` once it
    listens; SIGHUP reloads; SIGTERM stops."""
    from palisade.datastore import open_store
    from palisade.waf._config import crs_dir
    from palisade.waf._proxy import run_proxy
    from palisade.waf._service import (
        EventShipper,
        FirewallSettings,
        engine_for,
        event_hook,
        json_lines_sink,
        reload_self,
    )

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    listen_at = _address("--listen", listen)
    upstream_at = _address("--upstream", upstream)
    try:
        crs = crs_dir(rules)
    except FileNotFoundError as exc:
        fail(str(exc))
    if datastore is not None and pod is None:
        fail("--datastore needs --pod (and --namespace): the workload whose settings apply")
    fallback = WebApplicationFirewallSpec(mode=mode.value, paranoia_level=paranoia)
    store = open_store(datastore_url(datastore)) if datastore is not None else None
    settings = FirewallSettings(store, namespace, pod or "", fallback=fallback)
    shipper = EventShipper(server, sink=json_lines_sink(events_log) if events_log else None)
    stop = threading.Event()
    if store is not None:
        settings.follow(reload_self, stop)

    def factory() -> object:
        return engine_for(settings.spec, crs)

    def ready(address: tuple[str, int]) -> None:
        err_console.print(
            f"palisade waf proxy on {address[0]}:{address[1]} → {upstream_at[0]}:{upstream_at[1]}"
            f" ({settings.spec.mode}, PL{settings.spec.paranoia_level}; {settings.source})"
        )
        print("ready", flush=True)

    try:
        run_proxy(
            factory,  # type: ignore[arg-type]
            listen_at,
            upstream_at,
            fail_open=not fail_closed and settings.spec.fail_open,
            workers=workers,
            inspect_response=inspect_responses or settings.spec.inspect_responses,
            on_result=event_hook(settings, shipper, dest_port=upstream_at[1]),
            on_ready=ready,
        )
    finally:
        stop.set()
        shipper.close()
        if store is not None:
            store.close()
