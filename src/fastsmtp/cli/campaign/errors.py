"""What goes wrong in a campaign and how the process says so.

:class:`CampaignInputError` is every problem found before anything was sent; the
``EXIT_*`` constants are the exit statuses of ``fastsmtp send`` (its ``--help`` lists them).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CampaignInputError",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_USAGE",
    "EXIT_SERVER",
    "EXIT_INTERRUPTED",
]

#: Every recipient accepted.
EXIT_OK = 0
#: Some recipients rejected, deferred, failed, uncertain or not sent.
EXIT_SOME_FAILED = 1
#: Bad usage or input (nothing sent).
EXIT_USAGE = 2
#: The server could not be reached or refused the login (nothing sent).
EXIT_SERVER = 3
#: Interrupted by Ctrl-C / SIGTERM (in-flight messages finished, journal up to date).
EXIT_INTERRUPTED = 130


class CampaignInputError(ValueError):
    """Bad input or usage found before anything was sent (exit status 2).

    Attributes:
        problems: Every problem found, one line each (e.g. ``"line 7: invalid address"``).
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)
