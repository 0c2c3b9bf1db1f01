"""The public API's types hold a user to the README's habits (strict mypy, both ways).

``tests/typing/user_code.py`` must type-check (``make lint`` checks it too); the snippets
here must NOT: a swapped argument order or a wrong outcome type is caught before it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

import fastsmtp  # noqa: E402

_PACKAGE_ROOT = str(Path(fastsmtp.__file__).resolve().parent.parent)
_USER_CODE = Path(__file__).resolve().parents[1] / "typing" / "user_code.py"


def _mypy(*args: str) -> tuple[int, str]:
    env_path = os.environ.get("MYPYPATH")
    # From a source tree (PYTHONPATH=src) mypy is shown the tree; an installed package
    # (make test) is found where it is installed: mypy refuses site-packages in MYPYPATH.
    if Path(_PACKAGE_ROOT).name not in ("site-packages", "dist-packages"):
        os.environ["MYPYPATH"] = _PACKAGE_ROOT
    try:
        out, err, status = mypy_api.run(["--strict", "--no-incremental", *args])
    finally:
        if env_path is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = env_path
    return status, out + err


def test_user_code_type_checks() -> None:
    status, out = _mypy(str(_USER_CODE))
    assert status == 0, out


def test_misuse_is_a_type_error(tmp_path: Path) -> None:
    bad = tmp_path / "misuse.py"
    bad.write_text(
        "from fastsmtp import Envelope, SMTPConnection\n"
        "async def f(conn: SMTPConnection) -> None:\n"
        "    await conn.send(Envelope('a@x.example', ['b@y.example']), b'body')\n"
        "    result = await conn.send(b'body', Envelope('a@x.example', 'b@y.example'))\n"
        "    count: str = result.accepted\n"
    )
    status, out = _mypy(str(bad))
    assert status != 0
    assert 'misuse.py:3: error: Argument 1 to "send" of "SMTPConnection"' in out, out
    assert "misuse.py:5: error: Incompatible types in assignment" in out, out
