"""A real Orthanc PACS (with the DICOMweb plugin) run from a temporary directory.

:class:`OrthancServer` writes a JSON configuration, starts ``Orthanc CONFIG`` with
``TCP_NODELAY=1`` (Debian's DCMTK-based DICOM layer leaves Nagle on otherwise), waits until
``GET /system`` answers and the DICOM port accepts connections, and logs to ``orthanc.log`` in
its directory so that a failure can show :meth:`OrthancServer.log_tail`.

By default it accepts C-ECHO/C-STORE/C-FIND/C-MOVE/C-GET from any AE title and host, accepts
unknown (private) storage SOP classes, does not check the called AE title, and needs no HTTP
authentication. :meth:`OrthancServer.restart` keeps the ports and the stored data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from tests.support.components import require_executable, require_file
from tests.support.http_fault_server import parse_multipart_related
from tests.support.ports import free_port, wait_for_port, wait_until

__all__ = ["DICOMWEB_PLUGIN", "ORTHANC_EXECUTABLE", "OrthancError", "OrthancServer"]

ORTHANC_EXECUTABLE = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
WADO_ACCEPT_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class OrthancError(RuntimeError):
    """Orthanc did not start, stop, or answer as expected; the message ends with its log tail."""


class OrthancServer:
    """One Orthanc process with its own storage, ports and configuration.

    Modalities are ``{name: (aet, host, port)}``; users are ``{username: password}`` and turn on
    HTTP basic authentication (the helper session then authenticates as the first user).
    ``extra_config`` entries override the generated configuration.
    """

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        workdir: str | Path | None = None,
        users: Mapping[str, str] | None = None,
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        stable_age: int = 1,
        concurrent_jobs: int = 4,
        http_threads: int = 20,
        dicom_threads: int = 8,
        unknown_sop_class_accepted: bool = True,
        verbose: bool = False,
        extra_config: Mapping[str, Any] | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        """Prepare the configuration on fresh free ports; nothing runs until :meth:`start`."""
        self._executable = require_executable(ORTHANC_EXECUTABLE, "Orthanc PACS")
        self._plugin = require_file(DICOMWEB_PLUGIN, "Orthanc DICOMweb plugin")
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="orthanc-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.users = dict(users or {})
        self.modalities = {name: tuple(value) for name, value in (modalities or {}).items()}
        self.stable_age = stable_age
        self.concurrent_jobs = concurrent_jobs
        self.http_threads = http_threads
        self.dicom_threads = dicom_threads
        self.unknown_sop_class_accepted = unknown_sop_class_accepted
        self.verbose = verbose
        self.extra_config = dict(extra_config or {})
        self.startup_timeout = startup_timeout
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.session = requests.Session()
        if self.users:
            self.session.auth = next(iter(self.users.items()))

    # -- properties

    @property
    def http_url(self) -> str:
        """REST API root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root without trailing slash, e.g. ``http://127.0.0.1:PORT/dicom-web``."""
        return f"{self.http_url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str] | None:
        """The (user, password) the helper session uses, or None without authentication."""
        return next(iter(self.users.items())) if self.users else None

    @property
    def running(self) -> bool:
        """True while the Orthanc process is alive."""
        return self._process is not None and self._process.poll() is None

    def config(self) -> dict[str, Any]:
        """Return the configuration that :meth:`start` writes."""
        storage = str(self.workdir / "storage")
        config: dict[str, Any] = {
            "Name": f"test-orthanc-{self.http_port}",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "Plugins": [str(self._plugin)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": dict(self.users),
            "DicomModalities": {name: list(value) for name, value in self.modalities.items()},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowFindWorklist": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "UnknownSopClassAccepted": self.unknown_sop_class_accepted,
            "StableAge": self.stable_age,
            "ConcurrentJobs": self.concurrent_jobs,
            "HttpThreadsCount": self.http_threads,
            "DicomThreadsCount": self.dicom_threads,
            "SaveJobs": False,
            "HttpTimeout": 60,
            "DicomScuTimeout": 30,
            "DicomScpTimeout": 30,
            "SynchronousCMove": True,
            # Orthanc gzips answers to any client sending Accept-Encoding: gzip (requests does):
            # ~4 s for a 200 MB WADO-RS answer instead of ~1 s.
            "HttpCompressionEnabled": False,
        }
        config.update(self.extra_config)
        return config

    # -- lifecycle

    def start(self) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until HTTP and DICOM answer."""
        if self.running:
            return self
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        env = dict(os.environ, TCP_NODELAY="1")
        args = [self._executable, str(self.config_path)]
        if self.verbose:
            args.insert(1, "--verbose")
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
        )
        try:
            wait_until(
                self._answers,
                timeout=self.startup_timeout,
                interval=0.02,
                message="Orthanc GET /system",
            )
            wait_for_port(
                "127.0.0.1", self.dicom_port, timeout=self.startup_timeout, process=self._process
            )
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise OrthancError(f"Orthanc did not start: {exc}\n{self.log_tail()}") from exc
        return self

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with code {self._process.returncode}")
        try:
            return self.session.get(f"{self.http_url}/system", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, timeout: float = 15.0, *, graceful: bool = True) -> None:
        """Stop Orthanc: SIGTERM, then SIGKILL after ``timeout`` seconds.

        A graceful stop of Orthanc 1.10 always takes about 3.5 s (its HTTP and DICOM servers
        and jobs engine each wait out a poll interval). ``graceful=False`` kills at once: only
        for data about to be thrown away.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> OrthancServer:
        """Stop gracefully and start again on the same ports with the same storage (~4 s)."""
        self.stop()
        return self.start()

    def cleanup(self, *, graceful: bool = False) -> None:
        """Stop (by default at once, see :meth:`stop`) and delete the working directory if
        this object created it."""
        self.stop(graceful=graceful)
        self.session.close()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OrthancServer:
        """Start Orthanc."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kill Orthanc and remove its temporary directory (if this object created it)."""
        self.cleanup()

    def log_tail(self, lines: int = 60) -> str:
        """Return the last ``lines`` lines of Orthanc's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no Orthanc log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- REST helpers

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        response = self.session.request(method, f"{self.http_url}{path}", **kwargs)
        if response.status_code >= 400:
            raise OrthancError(
                f"{method} {path} -> {response.status_code}: {response.text[:500]}\n"
                f"{self.log_tail(20)}"
            )
        return response

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET a REST path (e.g. ``/statistics``) and return its JSON."""
        return self._request("GET", path, params=params).json()

    def system(self) -> dict[str, Any]:
        """Return ``GET /system``."""
        result: dict[str, Any] = self.get_json("/system")
        return result

    def instances(self) -> list[str]:
        """Return the SOP Instance UIDs of all stored instances."""
        found = self._request(
            "POST", "/tools/find", json={"Level": "Instance", "Query": {}, "Expand": True}
        ).json()
        return [item["MainDicomTags"]["SOPInstanceUID"] for item in found]

    def count_instances(self) -> int:
        """Return the number of stored instances."""
        return int(self.get_json("/statistics")["CountInstances"])

    def wait_for_instances(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least ``count`` instances are stored."""
        wait_until(
            lambda: self.count_instances() >= count,
            timeout=timeout,
            interval=0.05,
            message=f"{count} instances in Orthanc",
        )

    def delete_all(self) -> None:
        """Delete every patient (and so every study, series and instance)."""
        for patient in self.get_json("/patients"):
            self._request("DELETE", f"/patients/{patient}")

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Store a DICOM file through ``POST /instances`` and return Orthanc's answer."""
        with Path(path).open("rb") as stream:
            answer: dict[str, Any] = self._request(
                "POST", "/instances", data=stream, headers={"Content-Type": "application/dicom"}
            ).json()
        return answer

    def upload_all(self, paths: Iterable[str | Path]) -> list[dict[str, Any]]:
        """Store several DICOM files through the REST API."""
        return [self.upload(path) for path in paths]

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare (or replace) a DICOM modality at run time (``PUT /modalities/{name}``).

        Orthanc only sends C-MOVE sub-operations to declared modalities.
        """
        self._request("PUT", f"/modalities/{name}", json={"AET": aet, "Host": host, "Port": port})
        self.modalities[name] = (aet, host, port)

    def remove_modality(self, name: str) -> None:
        """Forget a modality declared at run time."""
        self._request("DELETE", f"/modalities/{name}")
        self.modalities.pop(name, None)

    def wado_instance(self, study: str, series: str, instance: str) -> bytes:
        """Retrieve one instance by WADO-RS, as stored (``transfer-syntax=*``), as Part 10 bytes."""
        response = self._request(
            "GET",
            f"/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            headers={"Accept": WADO_ACCEPT_ANY},
        )
        parts = parse_multipart_related(response.content, response.headers.get("Content-Type", ""))
        if len(parts) != 1:
            raise OrthancError(f"WADO-RS returned {len(parts)} parts for one instance")
        return parts[0].content

    def qido(self, path: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """QIDO-RS query relative to the DICOMweb root, e.g. ``qido("/studies", {...})``."""
        response = self._request(
            "GET",
            f"/dicom-web/{path.lstrip('/')}",
            params=params,
            headers={"Accept": "application/dicom+json"},
        )
        if response.status_code == 204 or not response.content:
            return []
        result: list[dict[str, Any]] = response.json()
        return result
