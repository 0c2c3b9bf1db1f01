"""``fastsmtp serve --web PORT``: a development inbox in the browser (what MailHog and
Mailpit are run for).

Three modules, each one concern:

* :mod:`.store`: :class:`~.store.MessageStore` keeps the received messages in memory,
  bounded: at most ``max_messages`` (default ``DEFAULT_MAX_MESSAGES``, 500); when a new one
  arrives at the bound, the oldest is dropped. :func:`~.store.inbox_handler` makes the
  SMTP handler that feeds it: alone (messages only in memory) or wrapped around the
  ``Maildir`` or ``Printing`` handler, storing a message once the wrapped handler
  accepted it and before the 250 goes out (a client that got its 250 finds the message in
  the inbox). No aiohttp needed.
* :mod:`.app`: the aiohttp application (the page, the JSON API, server-sent events) and
  :class:`~.app.WebInbox`, which runs it on 127.0.0.1. Needs the ``aiofastsmtp[web]``
  extra; ``fastsmtp serve`` imports it only for ``--web``.
* :mod:`.page`: the static page, its script and its style.

Security: everything shown comes from whoever can reach the SMTP port, so the page is
static and builds its DOM with ``textContent`` only (no message text ever goes through
HTML parsing); a strict Content-Security-Policy forbids inline script anyway. A message's
HTML part is served from its own route under ``Content-Security-Policy: sandbox`` (no
script, no same-origin access, no remote loads) and shown in an ``<iframe sandbox>``.
Requests whose ``Host`` is not a loopback name are refused, so a web page on another
site cannot read the inbox through DNS rebinding. The inbox never listens beyond
127.0.0.1.
"""
