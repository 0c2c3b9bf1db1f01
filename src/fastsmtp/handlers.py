"""Built-in server handlers (the public path ``fastsmtp.handlers``).

They live in :mod:`fastsmtp.server.handlers`, beside the server that calls them.
"""

from .server.handlers import (
    Collector,
    Maildir,
    Printing,
    ReceivedMessage,
    Sink,
    StreamingHandler,
)

__all__ = ["Sink", "StreamingHandler", "Maildir", "Printing", "Collector", "ReceivedMessage"]
