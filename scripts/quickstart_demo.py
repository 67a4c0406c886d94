"""The quick start's demo: Orthanc + the import adapter + one image sent and found again.

Run by ``scripts/quickstart`` after installation. Starts Orthanc (DICOMweb store) and
``dicom-adapter import`` on free ports, sends a sample CT with DCMTK ``dcmsend``, finds it
through Orthanc's QIDO-RS, prints what a user would do next, and keeps running until Ctrl-C
(``--once``: stop after the check).
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
import tempfile
import time
import urllib.request
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def say(text: str) -> None:
    """Print one summary line at once: in order with the subprocesses' output in a log file."""
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"quickstart: {url} did not answer")


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"quickstart: nothing listens on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop after the round trip")
    parser.add_argument("--dimse-port", type=int, default=0, help="adapter port (default: free)")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dicom-adapter-quickstart-"))
    http_port, orthanc_dicom = free_port(), free_port()
    dimse_port = options.dimse_port or free_port()
    (work / "orthanc.json").write_text(json.dumps({
        "Name": "quickstart", "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"), "HttpPort": http_port, "DicomPort": orthanc_dicom,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }))
    env = {**os.environ, "TCP_NODELAY": "1"}
    # The local Orthanc is reached directly even on a machine whose HTTP(S)_PROXY is set.
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name, ""), "127.0.0.1", "localhost"]))
    processes: list[subprocess.Popen[bytes]] = []

    def stop(*_: object) -> None:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    try:
        with (work / "orthanc.log").open("wb") as log:
            processes.append(subprocess.Popen(
                ["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=log, env=env,
                cwd=work,
            ))
        dicomweb = f"http://127.0.0.1:{http_port}/dicom-web"
        wait_http(f"http://127.0.0.1:{http_port}/system")
        say(f"Orthanc (DICOMweb store) at {dicomweb}")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "import_adapter", "--dimse_aet", "IMPORTADAPTER",
             "--dimse_port", str(dimse_port), "--dicomweb_address", dicomweb],
            env=env,
        ))
        wait_port(dimse_port)
        say(f"Import adapter IMPORTADAPTER listening on port {dimse_port}")

        source = get_testdata_file("CT_small.dcm")
        if not isinstance(source, str):  # None: this pydicom lacks its own test file
            raise RuntimeError("pydicom's test data has no CT_small.dcm")
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        sample = work / "sample.dcm"
        ds.save_as(sample, enforce_file_format=True)
        command = ["/usr/bin/dcmsend", "-aec", "IMPORTADAPTER", "127.0.0.1", str(dimse_port),
                   str(sample)]
        say("$ " + " ".join(command))
        subprocess.run(command, env=env, check=True)

        query = f"{dicomweb}/instances?SOPInstanceUID={ds.SOPInstanceUID}"
        with urllib.request.urlopen(query, timeout=10) as response:
            found = json.loads(response.read() or b"[]")
        if len(found) != 1:
            print(f"quickstart: instance {ds.SOPInstanceUID} NOT found by QIDO", file=sys.stderr)
            return 1
        say(f"QIDO-RS {query}\n  -> found SOP Instance {ds.SOPInstanceUID}: the round trip works")
        if options.once:
            return 0
        say("The adapter keeps running; send your own images to it. Ctrl-C stops everything.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
