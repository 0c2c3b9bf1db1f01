"""``fastsmtp send``: a mail campaign from a CSV recipient list, resumable after any crash.

Theory of operation
-------------------
1. **Validate everything first** (nothing is sent when anything is wrong): the template is
   compiled (:mod:`.template`), the CSV is streamed once and every problem is collected
   with its line number (:mod:`.recipients`: no ``email`` column, invalid addresses, a
   template field a row lacks, a line break in a value that goes into a header). Then the
   pool connects and logs in once (:meth:`~fastsmtp.pool.SMTPPool.verify`). The options
   are checked by :mod:`.args`.
2. **Send** (:mod:`.run`): the CSV is streamed a second time as the source of
   :meth:`~fastsmtp.pool.SMTPPool.send_many`; each message is rendered only when the pool
   asks for it, so memory stays flat for a million recipients.
3. **Journal** (:mod:`.journal`, SQLite, WAL): a recipient is recorded as ``sending`` and
   *committed* before its message is handed to the pool, and its outcome (:mod:`.outcome`)
   is recorded after. ``--resume`` never sends again to an address whose 250 was recorded.
   A message whose outcome is unknown (connection lost after the final dot, or ``sending``
   with no outcome because the process died) is *uncertain* and is not resent unless
   ``--resend-uncertain`` is given: a duplicate is worse than a gap the user can see in the
   results.

Modules point one way: ``errors`` <- ``template`` <- ``recipients``; ``journal``,
``outcome``; ``run`` uses them all; ``args`` (the command line) uses ``run``.
"""

from __future__ import annotations

from .args import add_send_parser, cmd_send
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    CampaignInputError,
)
from .journal import Journal
from .outcome import classify, should_send
from .recipients import read_recipients, validate_recipients
from .template import FieldTemplate, MessageTemplate

__all__ = [
    "CampaignInputError",
    "FieldTemplate",
    "MessageTemplate",
    "Journal",
    "read_recipients",
    "validate_recipients",
    "classify",
    "should_send",
    "add_send_parser",
    "cmd_send",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_USAGE",
    "EXIT_SERVER",
    "EXIT_INTERRUPTED",
]
