"""The `promo` command line: what an organizer does by hand. One module per command group
(`promo.cli.campaign`, `events`, `audiences`, `webhooks`, `preview`), all printing through
`promo.cli.output`; this module only assembles them."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from promo.cli import audiences, campaign, events, preview, uncertain, webhooks
from promo.cli.output import err
from promo.errors import ConfigurationError, UserError

app = typer.Typer(
    help="event-promo: plan and send event promotion campaigns over email, SMS, voice, VK "
    "and Telegram.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for command in (campaign.demo, campaign.run, campaign.plan, campaign.why):
    app.command()(command)
app.add_typer(events.events_app, name="events")
app.add_typer(events.db_app, name="db")
app.add_typer(audiences.contacts_app, name="contacts")
app.add_typer(audiences.registrations_app, name="registrations")
app.add_typer(webhooks.webhooks_app, name="webhooks")
app.add_typer(webhooks.telegram_app, name="telegram")
app.command("preview")(preview.preview)
app.add_typer(uncertain.uncertain_app, name="uncertain")


def main() -> None:
    try:
        app()
    except UserError as exc:
        err.print("[red]error:[/] " + escape(str(exc)), highlight=False)
        sys.exit(2)
    except Exception as exc:
        # a provider's settings refused (a revoked key) or a flow run that ended Failed with
        # its reason: one line, the run's log has the rest
        from prefect.exceptions import FailedRun

        if not isinstance(exc, FailedRun | ConfigurationError):
            raise
        err.print("[red]error:[/] " + escape(str(exc)), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
