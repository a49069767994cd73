"""Errors an organizer sees: they say where and what, and the CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input or configuration. The message is complete and shown as it is."""


class EventError(UserError):
    """An event file that does not validate; lists every problem with its field."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: invalid event\n" + "\n".join(f"  {p}" for p in problems))


class PlanError(UserError):
    """A campaign that breaks the campaign rules (too early, too many waves, in the past)."""


class ConfigurationError(Exception):
    """Missing or wrong credentials or settings: fails fast, never retried or swallowed.

    Raised out of `deliver` with `results`: what was settled before it stopped (the rest
    of the messages were not sent).
    """

    def __init__(self, message: str, *, provider: str = "", status: int | None = None,
                 code: str | int | None = None):
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.code = code
        self.results: list = []  # channels.base.SendResult, one per message settled
