"""Thin wrappers around the DCMTK command-line tools, plus a ``storescp`` server.

Every tool is called by its absolute path under ``/usr/bin`` (pip's pynetdicom installs scripts
with the same names that shadow DCMTK on ``PATH``) and with ``TCP_NODELAY=1`` in its environment
(Debian's DCMTK leaves Nagle's algorithm on otherwise, which makes each C-STORE wait ~40 ms).

The wrappers return :class:`subprocess.CompletedProcess` with text output captured; they do not
raise on a non-zero exit status, so tests can assert on failures too. A missing tool skips the
test (fails it in CI), see :mod:`tests.support.components`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import pydicom

from tests.support.components import require_executable
from tests.support.ports import free_port, wait_for_port, wait_until

__all__ = [
    "DCMTK_BIN",
    "QueryModel",
    "StoreSCP",
    "dcmdump",
    "dcmsend",
    "dcmsend_summary",
    "dcmtk_env",
    "dcmtk_tool",
    "echoscu",
    "findscu",
    "getscu",
    "movescu",
    "per_file_syntax_profile",
    "read_responses",
    "storescu",
]

DCMTK_BIN = Path("/usr/bin")
MAX_PRESENTATION_CONTEXTS = 128
QueryModel = Literal["patient", "study", "psonly", "worklist"]
_MODEL_FLAGS: dict[str, str] = {"patient": "-P", "study": "-S", "psonly": "-O", "worklist": "-W"}
PathLike = str | Path


def dcmtk_tool(name: str) -> str:
    """Return ``/usr/bin/NAME`` for a DCMTK tool, or skip (fail in CI) if it is not installed."""
    return require_executable(str(DCMTK_BIN / name), "DCMTK command-line tools (apt package dcmtk)")


def dcmtk_env() -> dict[str, str]:
    """The environment every DCMTK process gets: the current one plus ``TCP_NODELAY=1``."""
    return dict(os.environ, TCP_NODELAY="1")


def _run(tool: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk_tool(tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dcmtk_env(),
        check=False,
    )


def _key_args(keys: Iterable[str]) -> list[str]:
    args: list[str] = []
    for key in keys:
        args += ["-k", key]
    return args


def echoscu(
    host: str,
    port: int,
    called_aet: str = "ANY-SCP",
    calling_aet: str = "ECHOSCU",
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Send a C-ECHO."""
    return _run(
        "echoscu", ["-aec", called_aet, "-aet", calling_aet, *extra_args, host, str(port)], timeout
    )


def per_file_syntax_profile(
    files: Iterable[PathLike], config_path: PathLike, profile: str = "PerFile"
) -> Path:
    """Write a storescu association profile proposing each (SOP class, transfer syntax) alone.

    Reads SOPClassUID and TransferSyntaxUID of each file with pydicom and proposes one
    presentation context per distinct pair, so each file travels in its own transfer syntax
    instead of being converted to the one accepted for a shared uncompressed context.
    Raises :class:`ValueError` beyond 128 presentation contexts.
    """
    pairs: list[tuple[str, str]] = []
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        pair = (str(meta.file_meta.MediaStorageSOPClassUID), str(meta.file_meta.TransferSyntaxUID))
        if pair not in pairs:
            pairs.append(pair)
    if len(pairs) > MAX_PRESENTATION_CONTEXTS:
        raise ValueError(
            f"{len(pairs)} (SOP class, transfer syntax) pairs: "
            f"more than {MAX_PRESENTATION_CONTEXTS} presentation contexts"
        )
    syntaxes = sorted({syntax for _, syntax in pairs})
    section = {syntax: f"TS{index}" for index, syntax in enumerate(syntaxes, start=1)}
    lines = ["[[TransferSyntaxes]]"]
    for syntax in syntaxes:
        lines += [f"[{section[syntax]}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for index, (sop_class, syntax) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{index} = {sop_class}\\{section[syntax]}")
    lines += ["[[Profiles]]", f"[{profile}]", "PresentationContexts = Contexts", ""]
    path = Path(config_path)
    path.write_text("\n".join(lines))
    return path


def storescu(
    host: str,
    port: int,
    files: Sequence[PathLike],
    called_aet: str = "ANY-SCP",
    calling_aet: str = "STORESCU",
    extra_args: Sequence[str] = (),
    per_file_syntax: bool = False,
    *,
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Send files with DCMTK ``storescu`` on one association.

    Without ``per_file_syntax``: storescu's defaults plus ``-R`` (propose only the SOP classes
    the files need). Then only uncompressed syntaxes are proposed, in one context per SOP class:
    a big endian file arrives as explicit VR little endian, a compressed file fails ("unable to
    convert dataset"), and a file with a private SOP class is refused before connecting
    ("unknown storage SOP class"). Fine for a corpus of explicit-VR-LE files.

    With ``per_file_syntax``, a generated ``-xf`` profile (:func:`per_file_syntax_profile`)
    proposes each (SOP class, transfer syntax) pair of the files in its own context, so every
    file, private SOP classes included, is sent unchanged.
    """
    args = ["-aec", called_aet, "-aet", calling_aet]
    with tempfile.TemporaryDirectory(prefix="storescu-") as scratch:
        if per_file_syntax:
            config = per_file_syntax_profile(files, Path(scratch) / "profile.cfg")
            args += ["-xf", str(config), "PerFile"]
        else:
            args.append("-R")
        args += [*extra_args, host, str(port), *(str(path) for path in files)]
        return _run("storescu", args, timeout)


def dcmsend(
    host: str,
    port: int,
    files: Sequence[PathLike],
    called_aet: str = "ANY-SCP",
    calling_aet: str = "DCMSEND",
    extra_args: Sequence[str] = (),
    *,
    decompress: Literal["never", "lossless", "lossy"] = "never",
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Send files with DCMTK ``dcmsend`` (one presentation context per SOP class and syntax).

    Compressed files keep their transfer syntax; uncompressed ones (implicit VR, big endian)
    share a context that proposes explicit VR little endian first, so they are usually
    converted: use :func:`storescu` with ``per_file_syntax=True`` to send them unchanged.
    ``decompress="never"`` (``-dn``) makes a compressed file the peer refuses fail instead of
    being silently decompressed (dcmsend's own default is ``+dls``).

    dcmsend exits 0 even when files were not sent (no acceptable presentation context) or were
    refused; this wrapper runs it with ``-v``, reads its status summary
    (:func:`dcmsend_summary`) and sets ``returncode`` to 1 in that case.
    """
    flag = {"never": "-dn", "lossless": "+dls", "lossy": "+dly"}[decompress]
    args = ["-v", "-aec", called_aet, "-aet", calling_aet, flag, *extra_args, host, str(port)]
    result = _run("dcmsend", [*args, *(str(path) for path in files)], timeout)
    summary = dcmsend_summary(result)
    failed = sum(summary.get(key, 0) for key in _DCMSEND_FAILURE_KEYS)
    if result.returncode == 0 and failed:
        result.returncode = 1
    return result


_DCMSEND_FAILURE_KEYS = (
    "NOT sent to the peer",
    "with status ERROR",
    "with status REFUSED",
    "with unknown status",
)


def dcmsend_summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Parse the "Status Summary" of ``dcmsend -v``, e.g. ``{"with status SUCCESS": 4, ...}``."""
    summary: dict[str, int] = {}
    text = result.stdout + result.stderr
    if "Status Summary" not in text:
        return summary
    for line in text.split("Status Summary", 1)[1].splitlines():
        label, sep, value = line.partition(" : ")
        label = label.removeprefix("I:").strip(" -*")
        if sep and value.strip().isdigit():
            summary[label] = int(value.strip())
    return summary


def findscu(
    host: str,
    port: int,
    keys: Sequence[str],
    called_aet: str = "ANY-SCP",
    calling_aet: str = "FINDSCU",
    *,
    model: QueryModel = "study",
    output_dir: PathLike | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Send a C-FIND; with ``output_dir`` each response is written there (``-X``, rsp0001.dcm...).

    Keys look like ``"0008,0052=STUDY"`` (set) or ``"0020,000D"`` (return).
    """
    args = ["-aec", called_aet, "-aet", calling_aet, _MODEL_FLAGS[model], *_key_args(keys)]
    if output_dir is not None:
        args += ["-X", "-od", str(output_dir)]
    return _run("findscu", [*args, *extra_args, host, str(port)], timeout)


def read_responses(output_dir: PathLike) -> list[pydicom.Dataset]:
    """Read the ``rsp*.dcm`` files that ``findscu -X`` wrote, in order."""
    return [pydicom.dcmread(path, force=True) for path in sorted(Path(output_dir).glob("rsp*.dcm"))]


def movescu(
    host: str,
    port: int,
    keys: Sequence[str],
    called_aet: str = "ANY-SCP",
    calling_aet: str = "MOVESCU",
    *,
    destination: str | None = None,
    model: QueryModel = "study",
    receive_port: int | None = None,
    output_dir: PathLike | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Send a C-MOVE to ``destination`` (default: the calling AE title).

    With ``receive_port`` movescu itself listens there (``+P``) for the C-STORE sub-operations
    and writes the objects to ``output_dir``; the peer must know that port for ``destination``.
    """
    args = ["-aec", called_aet, "-aet", calling_aet, _MODEL_FLAGS[model], *_key_args(keys)]
    if destination is not None:
        args += ["-aem", destination]
    if receive_port is not None:
        args += ["+P", str(receive_port), "+xa"]
    if output_dir is not None:
        args += ["-od", str(output_dir)]
    return _run("movescu", [*args, *extra_args, host, str(port)], timeout)


def getscu(
    host: str,
    port: int,
    keys: Sequence[str],
    called_aet: str = "ANY-SCP",
    calling_aet: str = "GETSCU",
    *,
    model: QueryModel = "study",
    output_dir: PathLike | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Send a C-GET; received objects go to ``output_dir``."""
    args = ["-aec", called_aet, "-aet", calling_aet, _MODEL_FLAGS[model], *_key_args(keys)]
    if output_dir is not None:
        args += ["-od", str(output_dir)]
    return _run("getscu", [*args, *extra_args, host, str(port)], timeout)


def dcmdump(
    path: PathLike, extra_args: Sequence[str] = (), *, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Dump a DICOM file as text."""
    return _run("dcmdump", [*extra_args, str(path)], timeout)


class StoreSCP:
    """DCMTK ``storescp`` on a free port, writing what it receives to ``output_dir``.

    ``syntaxes`` selects what it accepts: ``"all"`` (``+xa``, every syntax DCMTK knows),
    ``"uncompressed"`` (DCMTK's default: explicit/implicit little endian, big endian) or
    ``"implicit"`` (``+xi``, implicit VR little endian only: a peer that refuses the rest).
    Unknown SOP classes are accepted (``-pm``); files are written exactly as received (``+B``).
    storescp binds all interfaces (there is no option to bind loopback only).
    """

    def __init__(
        self,
        output_dir: PathLike,
        *,
        aet: str = "STORESCP",
        syntaxes: Literal["all", "uncompressed", "implicit"] = "all",
        extra_args: Sequence[str] = (),
        port: int | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        """Prepare the server; nothing runs until :meth:`start`."""
        self._executable = dcmtk_tool("storescp")
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.syntaxes = syntaxes
        self.extra_args = list(extra_args)
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self.log_path = self.output_dir.parent / f"storescp-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """The address to connect to."""
        return "127.0.0.1"

    def start(self) -> StoreSCP:
        """Start storescp and wait until its port accepts connections."""
        if self._process is not None and self._process.poll() is None:
            return self
        syntax_flags = {"all": ["+xa"], "uncompressed": [], "implicit": ["+xi"]}[self.syntaxes]
        args = [
            self._executable,
            "-aet", self.aet,
            "-od", str(self.output_dir),
            "-pm", "+B", "-dhl",
            *syntax_flags,
            *self.extra_args,
            str(self.port),
        ]  # fmt: skip
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            args, stdout=self._log_file, stderr=subprocess.STDOUT, env=dcmtk_env()
        )
        try:
            wait_for_port(self.host, self.port, timeout=self.startup_timeout, process=self._process)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"storescp did not start: {exc}\n{self.log_tail()}") from exc
        return self

    def stop(self) -> None:
        """Stop storescp (SIGTERM, then SIGKILL)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> StoreSCP:
        """Start storescp."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop storescp."""
        self.stop()

    def received_files(self) -> list[Path]:
        """The files received so far (sorted; storescp names them ``MODALITY.SOPInstanceUID``)."""
        return sorted(path for path in self.output_dir.rglob("*") if path.is_file())

    def wait_for_files(self, count: int, timeout: float = 30.0) -> list[Path]:
        """Wait until at least ``count`` files were received and have stopped growing.

        With ``+B`` storescp writes while it receives, so a file is only taken as complete once
        its size is the same on two polls (a sender that has returned has had every response,
        so its files are complete anyway).
        """
        sizes: dict[Path, int] = {}

        def complete() -> bool:
            files = self.received_files()
            current = {path: path.stat().st_size for path in files}
            stable = len(files) >= count and current == sizes
            sizes.clear()
            sizes.update(current)
            return stable

        wait_until(
            complete, timeout=timeout, interval=0.05, message=f"{count} complete files in storescp"
        )
        return self.received_files()

    def log_tail(self, lines: int = 40) -> str:
        """Return the end of storescp's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no storescp log)"
