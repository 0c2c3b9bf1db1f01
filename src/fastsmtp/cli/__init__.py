"""The applications: the ``fastsmtp`` command line (``serve``, ``demo``, ``send``).

They are users of the library, nothing more: they import :mod:`fastsmtp`'s public
modules, and nothing under ``src/fastsmtp`` outside this package imports them.
``fastsmtp.cli:main`` is the console script's entry point (``pyproject.toml``) and
``python -m fastsmtp`` calls it too.
"""

from __future__ import annotations

# The function shadows the submodule of the same name as an attribute of this package,
# which is what ``fastsmtp.cli:main`` (the console script) needs; import the submodule's
# other names with ``from fastsmtp.cli.main import ...``.
from .main import main

__all__ = ["main"]
