"""Built-in server handlers (the public path ``fastsmtp.handlers``).

They live in :mod:`fastsmtp.server.handlers`, beside the server that calls them.
"""

from .server.handlers import Maildir, Printing, Sink, StreamingHandler

__all__ = ["Sink", "StreamingHandler", "Maildir", "Printing"]
