"""``python -m fastsmtp``: the same command line as the ``fastsmtp`` script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
