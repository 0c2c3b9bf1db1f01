"""The campaign's outcome vocabulary: the library's (:mod:`fastsmtp.outcome`), shared with
the Celery store, so a journal and a store judge the same outcome the same way."""

from __future__ import annotations

from ...outcome import classify, deferred, should_send

__all__ = ["classify", "deferred", "should_send"]
