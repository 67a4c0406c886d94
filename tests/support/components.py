"""Policy for test components that may be missing from the machine.

A missing component (an executable, a plugin, a jar) makes the test *skip* on a developer's
machine, but *fail* when the environment variable ``CI`` is ``true``: CI must never go green
by silently skipping the integration tests it is meant to run.

Every support module goes through :func:`require` (or one of its wrappers), so the policy lives
in exactly one place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["in_ci", "missing", "require", "require_executable", "require_file"]


def in_ci() -> bool:
    """Return True when running in CI (env ``CI`` set to ``true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(message: str) -> NoReturn:
    """Report a missing component: fail the test in CI, skip it elsewhere."""
    if in_ci():
        pytest.fail(f"required test component missing (CI=true): {message}", pytrace=False)
    pytest.skip(f"test component missing: {message}")


def require(condition: bool, message: str) -> None:
    """Skip (or fail in CI) with ``message`` unless ``condition`` holds."""
    if not condition:
        missing(message)


def require_executable(path_or_name: str, why: str) -> str:
    """Return the absolute path of an executable, or skip/fail if it is not installed.

    An absolute path is checked as given (so ``/usr/bin/storescu`` is never confused with
    pynetdicom's ``storescu`` script earlier on ``PATH``); a bare name is looked up on ``PATH``.
    """
    if os.path.isabs(path_or_name):
        found = path_or_name if os.access(path_or_name, os.X_OK) else None
    else:
        found = shutil.which(path_or_name)
    if found is None:
        missing(f"executable {path_or_name!r} not found ({why})")
    return found


def require_file(path: str | Path, why: str) -> Path:
    """Return ``path`` as a :class:`Path`, or skip/fail if the file does not exist."""
    candidate = Path(path)
    if not candidate.is_file():
        missing(f"file {str(candidate)!r} not found ({why})")
    return candidate
