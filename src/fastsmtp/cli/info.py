"""``fastsmtp info``: what this installation runs (version, core, event loop, extras).

The first thing to ask for in a bug report, and the honest answer to "is the compiled
core in use?": a build that fell back to the pure-Python twin says so here.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from typing import Any

__all__ = ["add_info_parser", "cmd_info", "describe"]

#: Optional packages fastsmtp uses when they are installed: (import name, what for).
OPTIONAL = [
    ("uvloop", "faster event loop, used automatically"),
]


def describe() -> dict[str, str]:
    """The facts ``fastsmtp info`` prints, as a dict of strings."""
    import fastsmtp
    from fastsmtp import _codec

    from .._loop import loop_name, new_event_loop

    loop = new_event_loop()
    try:
        loop_in_use = loop_name(loop)
    finally:
        loop.close()
    core = _codec.IMPLEMENTATION
    facts = {
        "fastsmtp": fastsmtp.__version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "core": core + ("" if core == "cython" else
                        " (the pure-Python twin: the compiled core is not in use)"),
        "core module": _codec.core.__file__ or _codec.core.__name__,
        "event loop": loop_in_use,
    }
    for name, why in OPTIONAL:
        found = importlib.util.find_spec(name) is not None
        facts[name] = ("installed: " if found else "not installed: ") + why
    return facts


def cmd_info(args: argparse.Namespace) -> int:
    """Print :func:`describe`, one ``name: value`` line each."""
    for name, value in describe().items():
        print(f"{name}: {value}")
    return 0


def add_info_parser(subparsers: Any) -> None:
    """Declare ``fastsmtp info``."""
    p = subparsers.add_parser("info", help="show the version, the core in use and the event loop",
                              description=sys.modules[__name__].__doc__)
    p.set_defaults(func=cmd_info)
