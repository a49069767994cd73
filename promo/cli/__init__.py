"""The `promo` command line: what an organizer does by hand. One module per command group
(`promo.cli.campaign`, `events`, `audiences`, `attendance`, `report`, `digest`, `webhooks`,
`preview`),
all printing through `promo.cli.output`; this module only assembles them."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from promo.cli import (
    attendance,
    audiences,
    campaign,
    digest,
    events,
    preview,
    report,
    uncertain,
    webhooks,
)
from promo.cli.output import err
from promo.errors import ConfigurationError, UserError

app = typer.Typer(
    help="event-promo: plan and send event promotion campaigns over email, SMS, voice, VK "
    "and Telegram. Errors are one message; --debug (anywhere) or PROMO_DEBUG=1 shows the "
    "traceback.",
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
app.add_typer(attendance.attendance_app, name="attendance")
app.command("report")(report.report)
app.add_typer(digest.digest_app, name="digest")


DEBUG_HELP = "run with --debug (or PROMO_DEBUG=1) for the traceback"


def main() -> None:
    """The `promo` command. The one place where any error of a command becomes a message:
    bad input and configuration (UserError) as they are, anything else in one line that
    says what it was; `--debug` anywhere on the line or PROMO_DEBUG=1 shows the traceback."""
    import os

    debug = "--debug" in sys.argv[1:] or os.environ.get("PROMO_DEBUG", "") not in ("", "0")
    sys.argv[1:] = [a for a in sys.argv[1:] if a != "--debug"]
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except UserError as exc:
        if debug:
            raise
        err.print("[red]error:[/] " + escape(str(exc)), highlight=False)
        sys.exit(2)
    except Exception as exc:
        if debug:
            raise
        err.print("[red]error:[/] " + escape(_describe(exc)), highlight=False)
        sys.exit(2 if _expected(exc) else 1)


def _expected(exc: BaseException) -> bool:
    # a provider's settings refused (a revoked key) or a flow run that ended Failed with its
    # reason: the message is the whole story, the run's log has the rest
    from prefect.exceptions import FailedRun

    return isinstance(exc, FailedRun | ConfigurationError)


def _describe(exc: BaseException) -> str:
    if _expected(exc):
        return str(exc)
    if isinstance(exc, RecursionError):
        return f"the input is nested too deep to be read ({DEBUG_HELP})"
    if isinstance(exc, MemoryError):
        return f"out of memory: the input is too large ({DEBUG_HELP})"
    what = str(exc).splitlines()[0][:300] if str(exc) else ""
    return (f"unexpected {type(exc).__name__}" + (f": {what}" if what else "")
            + f" (a bug: please report it; {DEBUG_HELP})")
