"""``fastsmtp send``: a mail campaign from a CSV recipient list, resumable after any crash."""

from __future__ import annotations

from .run import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    CampaignInputError,
    FieldTemplate,
    Journal,
    MessageTemplate,
    Progress,
    add_send_parser,
    classify,
    cmd_send,
    read_recipients,
    should_send,
    validate_recipients,
)

__all__ = [
    "CampaignInputError",
    "FieldTemplate",
    "MessageTemplate",
    "Journal",
    "Progress",
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
