# shellcheck shell=bash
# Sourced by scripts/install, scripts/quickstart and scripts/test: where the project's Python
# environment is and how to use it.
#
# scripts/install makes the environment: a virtualenv, .venv in the checkout (DICOM_ADAPTER_VENV
# puts it elsewhere). The other scripts run its python, with its bin directory first on PATH, so
# console scripts (dicom-adapter, ruff, mypy, hadolint, kubernetes-validate) are found under
# sudo too, whose secure_path drops an activated virtualenv. PYTHON, when set, names another
# interpreter that has the project installed, and is used instead.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DICOM_ADAPTER_VENV:-$ROOT/.venv}"

# Sets PYTHON to the interpreter to use and puts its environment's bin first on PATH.
# Returns 1 (with a message naming the fix) when there is none with the project installed.
use_project_env() {
    local script="$1"
    if [ -z "${PYTHON:-}" ]; then
        if [ -x "$VENV/bin/python" ]; then
            PYTHON="$VENV/bin/python"
        elif python3 -c "import pytest, import_adapter" >/dev/null 2>&1; then
            # A developer's own environment (no .venv made yet): use it, as before.
            PYTHON=python3
            echo "$script: no $VENV (scripts/install makes it); using $(command -v python3)" >&2
        else
            echo "$script: the project's environment $VENV does not exist; run" \
                "'sudo scripts/install' (or 'sudo scripts/quickstart') first" >&2
            return 1
        fi
    fi
    local bin
    bin="$(cd "$(dirname "$(command -v "$PYTHON")")" && pwd)"
    if [ -f "$bin/activate" ]; then  # a virtualenv: its console scripts first
        PATH="$bin:$PATH"
        VIRTUAL_ENV="$(dirname "$bin")"
        export VIRTUAL_ENV
    fi
    export PYTHON PATH
}
