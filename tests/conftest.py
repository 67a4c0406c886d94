"""Shared fixtures for real-component tests (Orthanc, DCMTK, Pub/Sub emulator, HTTP faults).

Tests under ``tests/integration`` are marked ``integration`` automatically. Fixtures:

- ``orthanc`` (session): one shared Orthanc; tests use fresh UIDs instead of cleaning it.
- ``fresh_orthanc`` (function): factory ``fresh_orthanc(**OrthancServer kwargs)`` for private
  instances (e.g. with users or modalities); all are stopped at the end of the test.
- ``tmp_samples`` (function): one sample per available kind, fresh UIDs, in ``tmp_path``.
- ``pubsub_emulator`` (session): one emulator; use ``new_topic_and_subscription`` per test.
- ``store_scp`` (function): factory ``store_scp(aet=..., syntaxes=...)`` -> started ``StoreSCP``.
- ``fault_server`` (function): factory ``fault_server(upstream=None, **kwargs)`` -> started
  ``HttpFaultServer``.

Nothing is left outside pytest's base temporary directory: the session points ``TMPDIR`` (and
:mod:`tempfile`) at ``<basetemp>/tmp``, so what the tests, the adapters they run in process or as
subprocesses, Orthanc and DCMTK put in "the" temporary directory lands there. With pyproject's
``tmp_path_retention_policy = "failed"`` a test's ``tmp_path`` (and ``fresh_orthanc``'s working
directories) go when it passes, and the whole base directory when the session passes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dcmtk import StoreSCP
from tests.support.http_fault_server import HttpFaultServer
from tests.support.orthanc import OrthancServer
from tests.support.pubsub_emulator import PubSubEmulator
from tests.support.samples import SampleInstance, make_samples

_INTEGRATION_DIR = Path(__file__).parent / "integration"

# Every server the tests talk to is on loopback: a proxy set for this machine (a developer
# behind a corporate proxy) must not capture their traffic, nor that of the adapter processes
# and gRPC clients they start. The proxy tests set their own variables.
for _name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "GRPC_PROXY"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.lower(), None)


def pytest_configure(config: pytest.Config) -> None:
    """Register the project's markers."""
    config.addinivalue_line(
        "markers", "integration: runs real components (Orthanc, DCMTK, emulators) over loopback"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration as ``integration``."""
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


#: Per test item: {"setup"|"call"|"teardown": passed}, for fixtures that keep data only when
#: their test failed.
_PHASES_PASSED = pytest.StashKey[dict[str, bool]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Record whether each phase of a test passed (see :func:`_passed`)."""
    report = yield
    item.stash.setdefault(_PHASES_PASSED, {})[report.when] = report.passed
    return report


def _passed(request: pytest.FixtureRequest) -> bool:
    """Whether the requesting test passed (its setup and call)."""
    phases = request.node.stash.get(_PHASES_PASSED, {})
    return bool(phases.get("setup", False) and phases.get("call", False))


@pytest.fixture(autouse=True, scope="session")
def _temporary_directory_inside_basetemp(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """Point ``TMPDIR`` and :mod:`tempfile` at ``<basetemp>/tmp`` for the whole session.

    Temporary files that code under test makes (pynetdicom's received datasets, spool and
    retrieve folders, subprocesses' own) then stay inside pytest's base temporary directory,
    removed with it, instead of piling up in the machine's ``/tmp``.
    """
    import tempfile

    directory = tmp_path_factory.getbasetemp() / "tmp"
    directory.mkdir(exist_ok=True)
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(directory)
    tempfile.tempdir = str(directory)
    yield directory
    tempfile.tempdir = saved_tempdir
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


_PROCESS_GLOBALS = (
    "UNRESTRICTED_STORAGE_SERVICE",
    "STORE_RECV_CHUNKED_DATASET",
    "STORE_SEND_CHUNKED_DATASET",
)


#: The logging module's switches that common.logs.configure_logging turns off (a CLI test
#: configures logging in this process); pytest's captured logs show file:line again after it.
_LOGGING_SWITCHES = ("logThreads", "logProcesses", "logMultiprocessing", "_srcfile")


def _restoring_process_globals() -> Iterator[None]:
    import logging
    import tempfile

    from pynetdicom import _config

    saved = {name: getattr(_config, name) for name in _PROCESS_GLOBALS}
    saved_logging = {name: getattr(logging, name) for name in _LOGGING_SWITCHES}
    saved_tempdir = tempfile.tempdir
    yield
    for name, value in saved.items():
        setattr(_config, name, value)
    for name, value in saved_logging.items():
        setattr(logging, name, value)
    logging.captureWarnings(False)  # configure_logging routes warnings into logging
    tempfile.tempdir = saved_tempdir


@pytest.fixture(autouse=True)
def _isolate_process_globals() -> Iterator[None]:
    """Undo the process-wide settings an in-process adapter makes (pynetdicom's ``_config``,
    ``tempfile.tempdir``, logging's switches and warnings capture), so a later test's own pynetdicom peer behaves as
    configured."""
    yield from _restoring_process_globals()


@pytest.fixture(autouse=True, scope="module")
def _isolate_process_globals_per_module() -> Iterator[None]:
    """The same around each module: module-scoped adapter fixtures set them up front."""
    yield from _restoring_process_globals()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """One Orthanc shared by the whole session."""
    server = OrthancServer(workdir=tmp_path_factory.mktemp("orthanc-session"))
    with server:
        yield server


@pytest.fixture
def fresh_orthanc(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., OrthancServer]]:
    """Factory for private, started Orthanc servers, stopped when the test ends; their working
    directories (storage, log) are deleted then too, unless the test failed."""
    servers: list[OrthancServer] = []
    workdirs: list[Path] = []

    def factory(**kwargs: Any) -> OrthancServer:
        if "workdir" not in kwargs:
            kwargs["workdir"] = tmp_path_factory.mktemp("orthanc")
            workdirs.append(kwargs["workdir"])
        server = OrthancServer(**kwargs)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.cleanup()
    if _passed(request):
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def tmp_samples(tmp_path: Path) -> list[SampleInstance]:
    """One sample of every available kind, with fresh UIDs, in a temporary directory."""
    return make_samples(tmp_path / "samples")


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """One Pub/Sub emulator for the session (``PUBSUB_EMULATOR_HOST`` is set while it runs)."""
    with PubSubEmulator(log_dir=tmp_path_factory.mktemp("pubsub-emulator")) as emulator:
        yield emulator


@pytest.fixture
def store_scp(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    """Factory for started DCMTK storescp servers, each with its own output directory."""
    servers: list[StoreSCP] = []

    def factory(**kwargs: Any) -> StoreSCP:
        output_dir = tmp_path / f"storescp-{len(servers)}" / "received"
        server = StoreSCP(output_dir, **kwargs)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def fault_server() -> Iterator[Callable[..., HttpFaultServer]]:
    """Factory for started HTTP sinks / fault-injecting proxies, stopped when the test ends."""
    servers: list[HttpFaultServer] = []

    def factory(upstream: str | None = None, **kwargs: Any) -> HttpFaultServer:
        server = HttpFaultServer(upstream, **kwargs)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()
