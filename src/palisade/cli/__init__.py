"""The `palisade` command: a thin shell over the library, in the manner of calicoctl/kubectl.

One sub-command group per area; each command loads and validates its input completely before
it changes anything, prints one line per problem, and exits 2 on invalid input.
"""

from __future__ import annotations

import typer

from . import _lab, _policy, _resources, _server, _waf
from ._agent import agent
from ._demo import demo
from ._events import events_app
from ._flows_offline import recommend_command, whatif_command
from ._waf_proxy import extauthz as waf_extauthz
from ._waf_proxy import proxy as waf_proxy

app = typer.Typer(
    name="palisade",
    help="Palisade: zero-trust network security for Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(_resources.validate)
app.command()(_resources.apply)
app.command()(_resources.get)
app.command()(_resources.delete)
app.command()(demo)
app.command()(agent)
app.add_typer(_policy.app, name="policy")
app.command(name="recommend")(recommend_command)
app.command(name="whatif")(whatif_command)
app.add_typer(_lab.app, name="lab")
app.command()(_server.server)
app.add_typer(_server.flows_app, name="flows")
_waf.app.command(name="proxy")(waf_proxy)
_waf.app.command(name="extauthz")(waf_extauthz)
app.add_typer(_waf.app, name="waf")
app.add_typer(events_app, name="events")


def main() -> None:
    app()


__all__ = ["app", "main"]
