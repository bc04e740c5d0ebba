"""`palisade waf proxy` and `palisade waf extauthz`: the WAF inline in front of one workload
without Envoy, or as Envoy's external authorization service (gRPC or HTTP mode)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

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


RulesOption = Annotated[
    Path | None,
    typer.Option("--rules", help="The OWASP CRS folder (default: $PALISADE_CRS_DIR, …)."),
]
ModeOption = Annotated[Mode, typer.Option("--mode", help="Without a datastore: the engine's mode.")]
ParanoiaOption = Annotated[
    int, typer.Option("--paranoia", min=1, max=4, help="Without a datastore: PL 1-4.")
]
DatastoreOption = Annotated[
    str | None,
    typer.Option(
        "--datastore", help="Follow the WebApplicationFirewall that selects --namespace/--pod here."
    ),
]
NamespaceOption = Annotated[str, typer.Option("--namespace", "-n")]
PodOption = Annotated[str | None, typer.Option("--pod", help="The protected pod's name.")]
ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="Send Security Events to this server (http://… or unix:PATH)."),
]
EventsLogOption = Annotated[
    Path | None, typer.Option("--events-log", help="Also append events here (JSON lines).")
]
FailClosedOption = Annotated[
    bool, typer.Option("--fail-closed", help="Answer 503 when the engine fails.")
]


@dataclass
class _Service:
    """What both front ends share: settings (followed from the datastore), the engine
    factory, the Security Events hook."""

    settings: Any
    factory: Callable[[], Any]
    on_result: Callable[[Any, Any], None]
    start: Callable[[], None]  # in each serving process (after a fork): follow the datastore
    close: Callable[[], None]


def _service(
    *,
    rules: Path | None,
    mode: Mode,
    paranoia: int,
    datastore: str | None,
    namespace: str,
    pod: str | None,
    server: str | None,
    events_log: Path | None,
    dest_port: int | None,
) -> _Service:
    from palisade.datastore import open_store
    from palisade.waf._config import crs_dir
    from palisade.waf._service import (
        EventShipper,
        FirewallSettings,
        engine_for,
        event_hook,
        json_lines_sink,
        reload_self,
    )

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
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

    def start() -> None:
        # Threads do not survive a fork: each serving process follows the datastore itself
        # (and reloads itself); the event shipper starts its sender lazily per process.
        if store is not None:
            settings.refresh()
            settings.follow(reload_self, stop)

    def close() -> None:
        stop.set()
        shipper.close()
        if store is not None:
            store.close()

    return _Service(
        settings,
        lambda: engine_for(settings.spec, crs),
        event_hook(settings, shipper, dest_port=dest_port),
        start,
        close,
    )


def proxy(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")],
    upstream: Annotated[str, typer.Option("--upstream", help="HOST:PORT of the workload.")],
    rules: RulesOption = None,
    mode: ModeOption = Mode.detection_only,
    paranoia: ParanoiaOption = 1,
    datastore: DatastoreOption = None,
    namespace: NamespaceOption = "default",
    pod: PodOption = None,
    server: ServerOption = None,
    events_log: EventsLogOption = None,
    fail_closed: FailClosedOption = False,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 1,
    inspect_responses: Annotated[bool, typer.Option("--inspect-responses")] = False,
) -> None:
    """Reverse proxy with the WAF: inspect each request (and optionally each response) with
    the OWASP CRS, block or detect, and report Security Events. Prints ``ready`` once it
    listens; SIGHUP reloads; SIGTERM stops."""
    from palisade.waf._proxy import run_proxy

    listen_at = _address("--listen", listen)
    upstream_at = _address("--upstream", upstream)
    service = _service(
        rules=rules,
        mode=mode,
        paranoia=paranoia,
        datastore=datastore,
        namespace=namespace,
        pod=pod,
        server=server,
        events_log=events_log,
        dest_port=upstream_at[1],
    )
    spec = service.settings.spec

    def ready(address: tuple[str, int]) -> None:
        err_console.print(
            f"palisade waf proxy on {address[0]}:{address[1]} → {upstream_at[0]}:{upstream_at[1]}"
            f" ({spec.mode}, PL{spec.paranoia_level}; {service.settings.source})"
        )
        print("ready", flush=True)

    try:
        run_proxy(
            service.factory,
            listen_at,
            upstream_at,
            fail_open=not fail_closed and spec.fail_open,
            workers=workers,
            inspect_response=inspect_responses or spec.inspect_responses,
            on_result=service.on_result,
            on_ready=ready,
            on_worker_start=service.start,
        )
    finally:
        service.close()


def extauthz(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")],
    http: Annotated[
        bool,
        typer.Option("--http", help="Envoy's HTTP service mode instead of gRPC."),
    ] = False,
    path_prefix: Annotated[
        str, typer.Option("--path-prefix", help="HTTP mode: the prefix Envoy adds to paths.")
    ] = "",
    rules: RulesOption = None,
    mode: ModeOption = Mode.detection_only,
    paranoia: ParanoiaOption = 1,
    datastore: DatastoreOption = None,
    namespace: NamespaceOption = "default",
    pod: PodOption = None,
    server: ServerOption = None,
    events_log: EventsLogOption = None,
    fail_closed: FailClosedOption = False,
) -> None:
    """Envoy external authorization (``envoy.service.auth.v3.Authorization``, gRPC; or the
    HTTP service mode) with the WAF: where Calico's WAF sits in Envoy or a mesh. SIGHUP
    reloads; SIGTERM stops."""
    from palisade.waf._extauthz import serve_extauthz, serve_extauthz_http

    listen_at = _address("--listen", listen)
    service = _service(
        rules=rules,
        mode=mode,
        paranoia=paranoia,
        datastore=datastore,
        namespace=namespace,
        pod=pod,
        server=server,
        events_log=events_log,
        dest_port=None,
    )
    spec = service.settings.spec
    fail_open = not fail_closed and spec.fail_open
    err_console.print(
        f"palisade waf extauthz ({'HTTP' if http else 'gRPC'}) on {listen_at[0]}:{listen_at[1]}"
        f" ({spec.mode}, PL{spec.paranoia_level}; {service.settings.source})"
    )
    service.start()
    try:
        if http:
            serve_extauthz_http(
                service.factory,
                listen_at,
                fail_open=fail_open,
                path_prefix=path_prefix,
                on_result=service.on_result,
            )
        else:
            serve_extauthz(
                service.factory, listen_at, fail_open=fail_open, on_result=service.on_result
            )
    finally:
        service.close()
