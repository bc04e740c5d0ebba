"""`palisade waf ftw`: go-ftw-format regression tests run in process through the WAF engine,
configured as the CRS CI's libmodsecurity3 container, and judged as go-ftw 2.3.0 judges."""

from __future__ import annotations

import json
import re
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ._common import console, err_console, fail

app = typer.Typer(
    help="The web application firewall (SecLang engine running the OWASP CRS).",
    no_args_is_help=True,
)


@app.callback()
def waf() -> None:
    """The web application firewall (SecLang engine running the OWASP CRS)."""


class FtwFormat(StrEnum):
    table = "table"
    json = "json"


def ftw(
    paths: Annotated[
        list[Path],
        typer.Argument(help="go-ftw test files (.yaml/.yml) or folders holding them."),
    ],
    format: Annotated[
        FtwFormat, typer.Option("--format", help="A table of failures, or JSON of every test.")
    ] = FtwFormat.table,
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="The CRS folder (with rules/ and crs-setup.conf.example) or its rules/ folder. "
            "Default: the CRS the tests sit in.",
        ),
    ] = None,
    overrides: Annotated[
        Path | None,
        typer.Option(
            "--overrides",
            help="go-ftw platform overrides (e.g. nginx-overrides.yaml): their output "
            "replaces the tests' expected output.",
        ),
    ] = None,
    include: Annotated[
        str | None,
        typer.Option("--include", help="Run only tests whose '<rule_id>-<test_id>' matches."),
    ] = None,
) -> None:
    """Run go-ftw test files through the WAF with the CRS CI configuration."""
    from palisade.waf._ftw import (
        FtwRunner,
        TestResult,
        find_crs_root,
        load_crs_engine,
        load_overrides,
        load_test_files,
    )
    from palisade.waf._ftw_load import FtwLoadError

    for path in paths:
        if not path.exists():
            fail(f"{path}: no such file or directory")
    pattern = None
    if include is not None:
        try:
            pattern = re.compile(include)
        except re.error as exc:
            fail(f"--include: not a valid regular expression: {exc}")
    if rules is None:
        roots = {find_crs_root(path) for path in paths}
        if None in roots or len(roots) != 1:
            fail(
                "the tests are not inside a CRS folder (rules/ and crs-setup.conf.example); "
                "give the rules with --rules DIR"
            )
        rules = roots.pop()
        assert rules is not None
    elif not rules.is_dir():
        fail(f"--rules {rules}: no such directory")

    files, errors = load_test_files(paths)
    for error in errors:
        err_console.print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
    if errors:
        fail(f"{len(errors)} test file(s) could not be loaded; nothing was run")
    platform = None
    if overrides is not None:
        if not overrides.is_file():
            fail(f"--overrides {overrides}: no such file")
        try:
            platform = load_overrides(overrides)
        except FtwLoadError as exc:
            fail(str(exc))

    from palisade.waf import WafLoadError

    started = time.monotonic()
    try:
        engine = load_crs_engine(rules)
    except (WafLoadError, FileNotFoundError) as exc:
        fail(str(exc), code=1)
    runner = FtwRunner(engine, overrides=platform, include=pattern)
    results: list[TestResult] = runner.run(files)
    elapsed = time.monotonic() - started
    passed = sum(1 for r in results if r.passed)
    failed = len(results) - passed

    if format is FtwFormat.json:
        document = {
            "passed": passed,
            "failed": failed,
            "results": [r.to_json() for r in results],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        if failed:
            table = Table(title=f"{failed} failing test(s)", title_justify="left")
            table.add_column("test", no_wrap=True)
            table.add_column("file")
            table.add_column("why")
            for result in results:
                if not result.passed:
                    table.add_row(result.test, _short(result.file), escape(result.why))
            console.print(table)
        total = len(results)
        rate = 100.0 * passed / total if total else 100.0
        colour = "green" if not failed else "red"
        console.print(
            f"[{colour}]{passed} of {total} tests passed ({rate:.2f} %)[/{colour}], "
            f"{failed} failed, in {elapsed:.1f} s"
        )
    if failed:
        raise typer.Exit(1)


def _short(file: str) -> str:
    path = Path(file)
    return f"{path.parent.name}/{path.name}"


app.command()(ftw)
