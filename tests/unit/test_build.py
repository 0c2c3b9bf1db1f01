"""The build and the implementation selector.

With ``FASTSMTP_REQUIRE_EXTENSION=1`` (CI), the compiled core must be the one that loads,
so a broken build cannot pass CI by silently falling back to the twin. The checks run in
a subprocess, each with a clean ``FASTSMTP_IMPLEMENTATION``, importing the same fastsmtp
this test run imports.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastsmtp

_PACKAGE_ROOT = str(Path(fastsmtp.__file__).resolve().parent.parent)
_PROBE = "import fastsmtp, fastsmtp._codec as c; print(fastsmtp.IMPLEMENTATION, c.core.__name__)"


def _run(implementation: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FASTSMTP_IMPLEMENTATION"}
    if implementation is not None:
        env["FASTSMTP_IMPLEMENTATION"] = implementation
    env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
    )


def _extension_built() -> bool:
    return importlib.util.find_spec("fastsmtp._core") is not None


def test_default_is_compiled_when_built() -> None:
    result = _run(None)
    assert result.returncode == 0, result.stderr
    if os.environ.get("FASTSMTP_REQUIRE_EXTENSION") == "1":
        assert result.stdout.split() == ["cython", "fastsmtp._core"], (
            "FASTSMTP_REQUIRE_EXTENSION=1 but the compiled core did not load"
        )
    elif _extension_built():
        assert result.stdout.split() == ["cython", "fastsmtp._core"]
    else:
        assert result.stdout.split() == ["python", "fastsmtp._core_py"]


def test_python_forces_twin() -> None:
    result = _run("python")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["python", "fastsmtp._core_py"]


def test_cython_demands_extension() -> None:
    result = _run("cython")
    if _extension_built() or os.environ.get("FASTSMTP_REQUIRE_EXTENSION") == "1":
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["cython", "fastsmtp._core"]
    else:
        assert result.returncode != 0
        assert "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr


@pytest.mark.parametrize("value", ["bogus", "pypy", "1"])
def test_bogus_value_is_refused(value: str) -> None:
    result = _run(value)
    assert result.returncode != 0
    assert "FASTSMTP_IMPLEMENTATION" in result.stderr


def test_case_and_spaces_are_ignored() -> None:
    result = _run(" Python ")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "python"


def test_compiled_core_is_an_extension_module() -> None:
    if not _extension_built():
        if os.environ.get("FASTSMTP_REQUIRE_EXTENSION") == "1":
            pytest.fail("FASTSMTP_REQUIRE_EXTENSION=1 but fastsmtp._core is missing")
        pytest.skip("fastsmtp._core is not built")
    from fastsmtp import _core

    assert Path(_core.__file__).suffix in (".so", ".pyd")
    # Extension types, not Python classes: no instance __dict__ to grow per connection.
    for cls in (_core.ReplyParser, _core.DataEncoder, _core.ServerReader):
        assert not hasattr(cls(), "__dict__")


def test_cython_on_a_pure_build_names_the_fix(tmp_path: Path) -> None:
    """A tree without the compiled core, asked for it, says so (not "partially initialized")."""
    import shutil

    pure = tmp_path / "fastsmtp"
    shutil.copytree(Path(fastsmtp.__file__).parent, pure,
                    ignore=shutil.ignore_patterns("_core.*.so", "_core.*.pyd", "__pycache__"))
    assert not list(pure.glob("_core.*.so"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(FASTSMTP_IMPLEMENTATION="cython", PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "the compiled core was not built (see install notes" in result.stderr
    assert "partially initialized" not in result.stderr
    env["FASTSMTP_IMPLEMENTATION"] = ""
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.split() == ["python", "fastsmtp._core_py"], result.stderr
