"""Storage Commitment against a far store: how long a report takes, and how many QIDO requests.

Not a test: it asserts nothing about timing, it prints figures. The store is Orthanc behind a
:class:`tests.support.latency_proxy.LatencyProxy` (``--rtts``, round trips in ms), with a
counting proxy (:class:`tests.support.http_fault_server.HttpFaultServer`) in front of it; the
import adapter runs in this process with a durable spool (``--auto_ack_cstore``). For each
round trip and each number of studies (``--studies``), ``--count`` instances are stored, then a
requester sends one N-ACTION naming them all and waits for the N-EVENT-REPORT, in two phases,
each with a fresh Orthanc and adapter:

    here       the instances were stored through this adapter: it knows their studies and
               lists each study once (``studies/{uid}/instances``)
    elsewhere  the instances were stored into Orthanc directly, as another replica (or this
               one before a restart) would have: one search per instance
               (``instances?SOPInstanceUID=``), four at a time

It prints the seconds from the N-ACTION to the report and the QIDO-RS requests the store saw.

Run from the repository root, best in a private network namespace like the tests::

    unshare -n -- bash -c 'ip link set lo up && python -m bench.bench_commitment'
    python -m bench.bench_commitment --rtts 100 --studies 1 --count 100   # a quick run

It exits non-zero only when a report does not commit every instance.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian

from common.dimse.aet_dictionary import AetDictionary
from common.dimse.sender import PeerAddress
from import_adapter.commitment.service import CommitmentSettings
from tests.integration.commitment_support import REQUESTER, Requester
from tests.integration.spool_support import send_files, spool_settings
from tests.support.adapters import IMPORT_AET, running_import_adapter
from tests.support.http_fault_server import HttpFaultServer
from tests.support.latency_proxy import LatencyProxy
from tests.support.orthanc import OrthancServer
from tests.support.samples import make_corpus

PHASES = ("here", "elsewhere")
UPLOAD_TIMEOUT = 600.0


@dataclass(frozen=True)
class Row:
    """One phase's figures."""

    rtt_ms: float
    studies: int
    phase: str
    seconds: float
    qido_requests: int
    committed: int
    failed: int


def run_phase(rtt_ms: float, count: int, studies: int, phase: str, work: Path) -> Row:
    """Store ``count`` instances of ``studies`` studies, then time one commitment of them all."""
    corpus = make_corpus(work / "corpus", count, studies=studies)
    scu = Requester([str(ExplicitVRLittleEndian)])
    scu.listen()
    base = CommitmentSettings(wait=UPLOAD_TIMEOUT)
    settings = replace(base, report=replace(base.report, calling_aet=IMPORT_AET, timeout=30.0))
    try:
        with (
            OrthancServer(workdir=work / "orthanc") as store,
            LatencyProxy(store.http_port, one_way_ms=rtt_ms / 2) as far,
            HttpFaultServer(f"http://127.0.0.1:{far.port}") as counter,
            running_import_adapter(
                f"{counter.url}/dicom-web",
                spool=spool_settings(work / "spool"),
                aet_dictionary=AetDictionary([PeerAddress(REQUESTER, "127.0.0.1", scu.port)]),
                commitment=settings,
            ) as adapter,
        ):
            if phase == "here":
                acked = send_files(adapter.server.port, [s.path for s in corpus])
                if len(acked) != count:
                    raise RuntimeError(f"{len(acked)} of {count} instances acknowledged")
            else:
                store.upload_all(s.path for s in corpus)
            store.wait_for_instances(count, timeout=UPLOAD_TIMEOUT)
            if adapter.spooling is not None:  # nothing left for the commitment to wait for
                adapter.spooling.manager.wait_uploaded(
                    (s.sop_instance_uid for s in corpus), UPLOAD_TIMEOUT
                )
            refs = [(s.sop_class_uid, s.sop_instance_uid) for s in corpus]
            counter.reset()
            started = time.monotonic()
            scu.request(adapter.server.port, refs)
            _, info = scu.report(timeout=UPLOAD_TIMEOUT)
            seconds = time.monotonic() - started
            requests = sum(1 for r in counter.requests if r.method == "GET")
    finally:
        scu.stop()
    return Row(
        rtt_ms, studies, phase, seconds, requests,
        len(info.get("ReferencedSOPSequence", [])), len(info.get("FailedSOPSequence", [])),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run every phase and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtts", default="0,100", help="round trips in ms (comma-separated)")
    parser.add_argument("--count", type=int, default=500, help="instances per commitment")
    parser.add_argument("--studies", default="1,5", help="studies they belong to (comma-separated)")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'rtt ms':>6} {'studies':>7} {'phase':<9} {'seconds':>8} {'QIDO':>5} committed/failed")
    for rtt in (float(x) for x in args.rtts.split(",")):
        for studies in (int(x) for x in args.studies.split(",")):
            for phase in PHASES:
                with tempfile.TemporaryDirectory(prefix="bench-commitment-") as work:
                    row = run_phase(rtt, args.count, studies, phase, Path(work))
                rows.append(row)
                print(
                    f"{row.rtt_ms:>6g} {row.studies:>7} {row.phase:<9} {row.seconds:>8.2f} "
                    f"{row.qido_requests:>5} {row.committed}/{row.failed}", flush=True,
                )
    return 0 if all(r.committed == args.count and not r.failed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
