"""Benchmark: C-STORE SCUs sending the same files to the same DCMTK storescp.

Run: ``python -m bench.bench_dimse [--count 500] [--rounds 3]`` from the repository root (needs
DCMTK; best in a private network namespace as ``scripts/test`` does). Each round, in turn:

- ``StoreSender`` (the fast engine, :mod:`common.dimse.fast`), one association;
- a plain pynetdicom SCU (``send_c_store`` of each file, chunked, ``TCP_NODELAY``), one
  association;
- DCMTK ``storescu`` (``-R``), one association.

It prints instances/s (best and all rounds) and the ratios to storescu. Not a test.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config

from common.dimse.sender import PeerAddress, SenderSettings, StoreSender
from tests.support import dcmtk
from tests.support.dcmtk import StoreSCP
from tests.support.samples import make_corpus


def send_fast(scp: StoreSCP, files: list[Path]) -> None:
    """StoreSender on the fast engine."""
    sender = StoreSender(PeerAddress(scp.aet, scp.host, scp.port), SenderSettings("BENCH"))
    try:
        for path in files:
            if not sender.send(path).is_success:
                raise RuntimeError("C-STORE failed")
    finally:
        sender.close()


def send_pynetdicom(scp: StoreSCP, files: list[Path]) -> None:
    """A plain pynetdicom SCU: one association, chunked sends of the files as they are."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="BENCH")
    pairs: dict[str, set[str]] = {}
    for path in files:
        meta = read_file_meta_info(path)
        pairs.setdefault(str(meta.MediaStorageSOPClassUID), set()).add(
            str(meta.TransferSyntaxUID)
        )
    for sop_class, syntaxes in pairs.items():
        ae.add_requested_context(sop_class, sorted(syntaxes))
    assoc = ae.associate(scp.host, scp.port, ae_title=scp.aet)
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for path in files:
            status = assoc.send_c_store(path)
            if status.get("Status") != 0:
                raise RuntimeError("C-STORE failed")
    finally:
        assoc.release()


def send_storescu(scp: StoreSCP, files: list[Path]) -> None:
    """DCMTK storescu, one association."""
    result = dcmtk.storescu(scp.host, scp.port, files, scp.aet, "BENCH")
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-500:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    clients: dict[str, Callable[[StoreSCP, list[Path]], None]] = {
        "StoreSender (fast engine)": send_fast,
        "pynetdicom SCU": send_pynetdicom,
        "DCMTK storescu": send_storescu,
    }
    rates: dict[str, list[float]] = {name: [] for name in clients}
    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as scratch:
        work = Path(scratch)
        files = [s.path for s in make_corpus(work / "corpus", args.count)]
        size = sum(p.stat().st_size for p in files) / len(files)
        out = Path("/dev/shm") if Path("/dev/shm").is_dir() else work
        with (
            tempfile.TemporaryDirectory(dir=out, prefix="bench-dimse-scp-") as received,
            StoreSCP(Path(received) / "in", syntaxes="uncompressed") as scp,
        ):
            for _ in range(args.rounds):
                for name, client in clients.items():
                    started = time.perf_counter()
                    client(scp, files)
                    rates[name].append(len(files) / (time.perf_counter() - started))
                    for path in scp.received_files():
                        path.unlink()
    print(f"{len(files)} instances of {size / 1024:.1f} KiB each -> storescp, one association")
    best = {name: max(values) for name, values in rates.items()}
    for name, values in rates.items():
        runs = "/".join(f"{v:.0f}" for v in values)
        print(f"  {name:28s} {best[name]:8.0f} inst/s   runs {runs}")
    reference = best["DCMTK storescu"]
    for name in clients:
        print(f"  ratio {name} / storescu: {best[name] / reference:.2f}")
    print(f"  ratio fast / pynetdicom: "
          f"{best['StoreSender (fast engine)'] / best['pynetdicom SCU']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
