"""Build the container images from the Dockerfile and run them for real, with podman.

Run by ``scripts/container-check`` (as root). Steps, each timed:

1. Base image: no registry is reachable for ``python:3.11-slim-bookworm``, so a debootstrap
   bookworm root (python3 + venv, ca-certificates, netbase, tzdata; docs dropped) is imported
   with ``podman import`` as the Dockerfile's ``PYTHON_IMAGE`` (cached; ``--rebuild-base``).
2. Wheels: ``pip wheel`` on this machine (the build container has neither its CA certificates
   nor its pip settings); the build installs them with ``--no-index``.
3. ``podman build`` of the three targets: the default image, ``import`` and ``export``.
4. In a private network namespace (Orthanc binds all interfaces): Orthanc, and the ``import``
   image run as the Helm chart runs it (uid 10001, read-only root file system, writable /tmp
   and spool only, no capabilities, no privilege escalation) with the reference guide's
   container args; a CT sent with DCMTK's ``dcmsend`` must be found by QIDO-RS; the chart's
   ``helm test`` command (C-ECHO) runs in the default image; SIGTERM must stop it cleanly.
5. ``--help`` of the export image; the default image's answer to the guide's bare flags.

Prints the times and the image size. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
BASE_PACKAGES = ["python3", "python3-venv", "python-is-python3", "ca-certificates", "netbase",
                 "tzdata"]
BASE_IMAGE = "localhost/dicom-adapter-base:bookworm"
TAG = "check"
IMAGES = {
    None: f"localhost/dicom-adapter:{TAG}",
    "import": f"localhost/dicom-adapter-import:{TAG}",
    "export": f"localhost/dicom-adapter-export:{TAG}",
}
ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: The container args of the import deployment in Google's guide (tests/test_dockerfile.py
#: checks the same statically); the store address is the local Orthanc's here.
GUIDE_IMPORT_ARGS = ["--dimse_aet=IMPORTADAPTER", "--dimse_port=2575"]
DIMSE_PORT = 2575
#: How the Helm chart runs the adapters (values.yaml securityContext and podSecurityContext;
#: /tmp an emptyDir): uid 10001, read-only root file system, no capabilities.
CHART_SECURITY = [
    "--user", "10001:10001", "--read-only", "--read-only-tmpfs=false",
    "--tmpfs", "/tmp:rw,mode=1777", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
]
SPOOL = "/var/spool/dicom-adapter"
ADAPTER_UID = 10001

times: list[tuple[str, float]] = []
failures: list[str] = []


def say(text: str) -> None:
    print(text, flush=True)


@contextmanager
def timed(name: str) -> Iterator[None]:
    start = time.monotonic()
    say(f"== {name}")
    try:
        yield
    finally:
        times.append((name, time.monotonic() - start))


def run(command: Sequence[str], *, check: bool = True, quiet: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; its output is shown unless ``quiet`` (then returned)."""
    if not quiet:
        say("$ " + " ".join(command))
    result: subprocess.CompletedProcess[str] = subprocess.run(
        list(command), text=True, check=False, capture_output=quiet, **kwargs)
    if check and result.returncode != 0:
        detail = (result.stdout or "")[-2000:] + (result.stderr or "")[-2000:] if quiet else ""
        raise SystemExit(f"container-check: failed ({result.returncode}): "
                         f"{' '.join(command)}\n{detail}")
    return result


def check(condition: bool, what: str, detail: str = "") -> None:
    say(("ok      " if condition else "FAILED  ") + what)
    if not condition:
        failures.append(what)
        if detail:
            say(detail)


# ------------------------------------------------------------------------------- build


def debian_root_tarball(packages: Sequence[str]) -> Path:
    result = run(["bash", "-c", 'source "$0" && debian_root_tarball "$@"',
                  str(ROOT / "scripts" / "debian-root.sh"), *packages], quiet=True)
    return Path(result.stdout.strip().splitlines()[-1])


def slim(member: tarfile.TarInfo) -> bool:
    """Whether a file belongs in the base image (no docs but copyrights, no man pages)."""
    name = member.name.removeprefix("./")
    if name.startswith("usr/share/doc/"):
        return member.isdir() or name.endswith("/copyright")
    return not name.startswith(("usr/share/man/", "usr/share/info/", "usr/share/locale/",
                                "var/cache/debconf/templates.dat-old"))


def build_base(rebuild: bool) -> None:
    exists = run([*PODMAN, "image", "exists", BASE_IMAGE], check=False, quiet=True)
    if exists.returncode == 0 and not rebuild:
        say(f"{BASE_IMAGE}: cached")
        return
    tarball = debian_root_tarball(BASE_PACKAGES)
    with tempfile.TemporaryDirectory(prefix="container-base-") as scratch:
        slimmed = Path(scratch) / "base.tar"
        with tarfile.open(tarball) as source, tarfile.open(slimmed, "w") as target:
            for member in source:
                if slim(member):
                    data = source.extractfile(member) if member.isfile() else None
                    target.addfile(member, data)
        run([*PODMAN, "import", "--change", 'CMD ["python3"]', str(slimmed), BASE_IMAGE],
            quiet=True)
    say(f"{BASE_IMAGE}: imported from {tarball}")


def build_wheels(wheels: Path) -> None:
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--wheel-dir", str(wheels), ".[codecs]", "setuptools>=68"], cwd=ROOT, quiet=True)
    say(f"{len(list(wheels.glob('*.whl')))} wheels in {wheels}")


def build_images(wheels: Path) -> None:
    for target, image in IMAGES.items():
        command = [*PODMAN, "build", "--quiet", *ULIMITS, "--network", "none",
                   "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
                   "--build-arg", "PIP_INSTALL_ARGS=--no-index --find-links=/wheels",
                   "--volume", f"{wheels}:/wheels:ro", "--tag", image]
        if target:
            command += ["--target", target]
        run([*command, str(ROOT)])


# ------------------------------------------------------------------------------- run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"container-check: {what} not ready after {timeout:.0f}s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def container_running(name: str) -> bool:
    state = run([*PODMAN, "inspect", "--format", "{{.State.Running}}", name], check=False,
                quiet=True)
    return state.stdout.strip() == "true"


def make_sample(path: Path) -> str:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = get_testdata_file("CT_small.dcm")
    if not isinstance(source, str):  # None: this pydicom lacks its own test file
        raise RuntimeError("pydicom's test data has no CT_small.dcm")
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def run_phase(work: Path) -> None:
    """In the private network namespace: Orthanc, the import image, dcmsend, QIDO."""
    env = {**os.environ, "TCP_NODELAY": "1", "NO_PROXY": "127.0.0.1,localhost"}
    http_port, orthanc_dicom = free_port(), free_port()
    (work / "orthanc.json").write_text(json.dumps({
        "Name": "container-check", "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"), "HttpPort": http_port, "DicomPort": orthanc_dicom,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [ORTHANC_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }))
    name = f"dicom-adapter-check-{os.getpid()}"
    dicomweb = f"http://127.0.0.1:{http_port}/dicom-web"
    # The import workload's spool volume (an emptyDir or a PersistentVolume, group-owned by
    # fsGroup 10001): a directory of this machine. (A tmpfs on the image's WORKDIR comes out
    # root-owned 755 with podman 4.3, whatever its mode option.)
    spool = work / "spool"
    spool.mkdir()
    os.chown(spool, ADAPTER_UID, ADAPTER_UID)
    with (work / "orthanc.log").open("wb") as log:
        orthanc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log,
                                   stderr=log, env=env, cwd=work)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{http_port}/system"), 30, "Orthanc")
        with timed("import image, run as the chart runs it, in front of Orthanc"):
            run([*PODMAN, "run", "--detach", "--name", name, "--network", "host", *ULIMITS,
                 *CHART_SECURITY, "--volume", f"{spool}:{SPOOL}:rw", IMAGES["import"],
                 *GUIDE_IMPORT_ARGS,
                 f"--dicomweb_address={dicomweb}"])
            try:
                wait_for(lambda: port_open(DIMSE_PORT) or not container_running(name), 60,
                         "the import adapter")
                check(container_running(name), f"import adapter listening on {DIMSE_PORT}",
                      run([*PODMAN, "logs", name], check=False, quiet=True).stderr[-3000:])
                exercise_import(name, work, dicomweb, env)
            finally:
                run([*PODMAN, "stop", "--time", "30", name], check=False, quiet=True)
                code = run([*PODMAN, "inspect", "--format", "{{.State.ExitCode}}", name],
                           check=False, quiet=True).stdout.strip()
                logs = run([*PODMAN, "logs", name], check=False, quiet=True)
                check(code == "0", f"SIGTERM stops the import adapter cleanly (exit {code})",
                      (logs.stdout + logs.stderr)[-3000:])
                run([*PODMAN, "rm", "--force", name], check=False, quiet=True)
    finally:
        orthanc.send_signal(signal.SIGTERM)
        try:
            orthanc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            orthanc.kill()


def exercise_import(name: str, work: Path, dicomweb: str, env: dict[str, str]) -> None:
    uid = run([*PODMAN, "exec", name, "id", "-u"], check=False, quiet=True).stdout.strip()
    check(uid == "10001", f"runs as uid 10001 (id -u: {uid})")
    probe = run([*PODMAN, "exec", name, "touch", "/opt/probe"], check=False, quiet=True)
    check(probe.returncode != 0, "root file system is read-only")
    spool = run([*PODMAN, "exec", name, "touch", f"{SPOOL}/probe"], check=False, quiet=True)
    check(spool.returncode == 0, "spool directory is writable", spool.stderr)

    sample = work / "sample.dcm"
    sop_instance_uid = make_sample(sample)
    sent = run(["/usr/bin/dcmsend", "-aec", "IMPORTADAPTER", "127.0.0.1", str(DIMSE_PORT),
                str(sample)], check=False, env=env)
    check(sent.returncode == 0, "dcmsend through the import adapter container")
    query = f"{dicomweb}/instances?SOPInstanceUID={sop_instance_uid}"
    with urllib.request.urlopen(query, timeout=10) as response:
        found = json.loads(response.read() or b"[]")
    check(len(found) == 1, f"QIDO-RS finds the instance: {query}")

    # The chart's `helm test` hook: a C-ECHO from the default image.
    echo = run([*PODMAN, "run", "--rm", "--network", "host", *ULIMITS, *CHART_SECURITY,
                "--entrypoint", "python", IMAGES[None], "-m", "common.echo", "127.0.0.1",
                str(DIMSE_PORT), "--aec", "IMPORTADAPTER", "--aet", "HELMTEST"],
               check=False, quiet=True)
    check(echo.returncode == 0, "helm test command (python -m common.echo) in the image",
          echo.stdout + echo.stderr)


def help_checks() -> None:
    base = [*PODMAN, "run", "--rm", "--network", "none", *ULIMITS, *CHART_SECURITY]
    export = run([*base, IMAGES["export"], "--help"], check=False, quiet=True)
    check(export.returncode == 0 and "--subscription_id" in export.stdout,
          "export image: --help", export.stderr[-2000:])
    default = run([*base, IMAGES[None], "import", "--help"], check=False, quiet=True)
    check(default.returncode == 0 and "--dimse_aet" in default.stdout,
          "default image: import --help", default.stderr[-2000:])
    bare = run([*base, IMAGES[None], *GUIDE_IMPORT_ARGS], check=False, quiet=True)
    check(bare.returncode == 2 and "--target import" in bare.stderr,
          "default image: the guide's bare flags name the import target", bare.stderr[-2000:])


def image_size(image: str) -> int:
    size = run([*PODMAN, "image", "inspect", "--format", "{{.Size}}", image], quiet=True)
    return int(size.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rebuild-base", action="store_true", help="re-import the base image")
    parser.add_argument("--run-phase", metavar="WORKDIR", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run_phase:
        run_phase(Path(options.run_phase))
        with timed("export image --help; the default image and the guide's bare flags"):
            help_checks()
        for name, seconds in times:
            say(f"{seconds:7.1f}s  {name}")
        return 1 if failures else 0

    if os.geteuid() != 0 or shutil.which("podman") is None:
        raise SystemExit("container-check: run as root, with podman, runc, buildah and "
                         "debootstrap installed (apt-get install podman runc buildah debootstrap)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="container-check-") as scratch:
        work = Path(scratch)
        with timed("base image (debootstrap bookworm, podman import)"):
            build_base(options.rebuild_base)
        with timed("wheels (pip wheel on this machine)"):
            build_wheels(work / "wheels")
        with timed("podman build: default, import and export targets"):
            build_images(work / "wheels")
        phase_start = time.monotonic()
        # Orthanc binds all interfaces: it and the containers (network host) get a private
        # network namespace with only loopback.
        result = subprocess.run(
            ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "_",
             sys.executable, str(Path(__file__).resolve()), "--run-phase", str(work)],
            check=False)
        times.append(("run checks (private network namespace)", time.monotonic() - phase_start))
    size = image_size(IMAGES["import"])
    say("")
    for name, seconds in times:
        say(f"{seconds:7.1f}s  {name}")
    say(f"{time.monotonic() - start:7.1f}s  total")
    say(f"image size: {size / 1e6:.0f} MB ({', '.join(IMAGES.values())}, one set of layers;"
        f" base {image_size(BASE_IMAGE) / 1e6:.0f} MB)")
    say("container-check: " + ("passed" if result.returncode == 0 else "FAILED"))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
