"""Benchmark: C-FIND and C-MOVE through the import adapter vs Orthanc's own, in one run.

One Orthanc holds 1,000 one-instance studies and one 500-instance study. The adapter uses it as
its DICOMweb store. Measured (wall time of the DCMTK tool, median of several runs; the compared
runs take turns):

- C-FIND, STUDY level, all 1,000 studies: ``findscu`` to the adapter vs to Orthanc, and the
  adapter's QIDO-RS searches alone (the store's share of the adapter's time);
- C-MOVE of the 500-instance study to one ``storescp``: ``movescu`` to the adapter vs to Orthanc
  (the storescp is declared in Orthanc's DicomModalities);
- C-GET of the same study: ``getscu`` to the adapter vs to Orthanc (sub-operations on the
  requesting association, objects written to tmpfs when there is one).

Targets (issue 3): find within 2x of Orthanc's own (ratio <= 2), move >= 0.3x Orthanc's speed.
Run: ``python bench/bench_query_retrieve.py`` (not a test; needs Orthanc and DCMTK).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.auth import NoAuth
from common.dicomweb.address import parse_dicomweb_address
from common.dicomweb.client import DicomwebClient
from common.http import HttpTransport
from common.retry import RetryPolicy
from import_adapter.query.service import QuerySettings
from tests.integration.qr_support import ADAPTER_AET, LOCALHOST, start_adapter
from tests.support import dcmtk
from tests.support.dcmtk import StoreSCP
from tests.support.orthanc import OrthancServer
from tests.support.samples import make_corpus

STUDIES = 1000
MOVE_INSTANCES = 500
FIND_RUNS = 5
MOVE_RUNS = 3
GET_RUNS = 3


def _median(run: Callable[[], None], times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _interleaved_medians(runs: list[Callable[[], None]], times: int) -> list[float]:
    """The median time of each run, the runs taking turns (one round each, ``times`` rounds).

    The machine's state drifts (disk write-back, other load): taking turns gives every run the
    same conditions, where all of one and then all of the other favoured one of them.
    """
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(times):
        for index, run in enumerate(runs):
            started = time.perf_counter()
            run()
            samples[index].append(time.perf_counter() - started)
    return [statistics.median(times_of_run) for times_of_run in samples]


def _check(result: object) -> None:
    if getattr(result, "returncode", 1) != 0:
        raise SystemExit(f"tool failed: {getattr(result, 'stderr', '')}")


def qido_alone(dicomweb_url: str) -> Callable[[], None]:
    """The QIDO-RS searches the adapter makes for the benchmark's C-FIND, results only parsed.

    Same query, page size and parallel pages as the adapter: the time the store needs to
    answer them, a floor under the adapter's C-FIND time on this store.
    """
    settings = QuerySettings()
    client = DicomwebClient(
        parse_dicomweb_address(dicomweb_url), HttpTransport(), NoAuth(), RetryPolicy()
    )
    query = [("includefield", "0020000D,00100020,00100010,00080020,00080061")]

    def run() -> None:
        count = sum(1 for _ in client.search(
            ["studies"], query, page_size=settings.page_size, parallel=settings.parallel_pages
        ))  # fmt: skip
        if count < STUDIES:
            raise SystemExit(f"QIDO-RS returned {count} < {STUDIES} studies")

    return run


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-qr-"))
    try:
        scp = StoreSCP(work / "scp" / "in", aet="BENCHSCP").start()
        orthanc = OrthancServer(
            workdir=work / "orthanc", modalities={"scp": ("BENCHSCP", LOCALHOST, scp.port)}
        )
        with orthanc:
            print(f"loading {STUDIES} studies + a {MOVE_INSTANCES}-instance study ...", flush=True)
            small = make_corpus(work / "small", STUDIES, kinds=("CT",), studies=STUDIES)
            big = make_corpus(work / "big", MOVE_INSTANCES, studies=1, series_per_study=4)
            orthanc.upload_all([s.path for s in small + big])
            adapter = start_adapter(
                orthanc.dicomweb_url,
                page_size=QuerySettings().page_size,  # the CLI's defaults
                prefetch=16,
                destinations=[("BENCHSCP", LOCALHOST, scp.port)],
            )
            try:
                find_keys = [
                    "0008,0052=STUDY",
                    "0020,000D",
                    "0010,0020",
                    "0010,0010",
                    "0008,0020",
                    "0008,0061",
                ]
                # findscu writes every response to a file: on tmpfs when there is one, so the
                # disk's state does not weigh on either side.
                shm = Path("/dev/shm")
                out = Path(
                    tempfile.mkdtemp(prefix="bench-find-", dir=shm if shm.is_dir() else work)
                )

                def find(port: int, aet: str) -> Callable[[], None]:
                    def run() -> None:
                        shutil.rmtree(out, ignore_errors=True)
                        out.mkdir()
                        _check(
                            dcmtk.findscu(
                                LOCALHOST, port, find_keys, called_aet=aet, output_dir=out
                            )
                        )
                        count = len(list(out.glob("rsp*.dcm")))
                        if count < STUDIES:
                            raise SystemExit(f"C-FIND returned {count} < {STUDIES} studies")

                    return run

                try:
                    find_adapter, find_orthanc, find_qido = _interleaved_medians(
                        [
                            find(adapter.server.port, ADAPTER_AET),
                            find(orthanc.dicom_port, orthanc.aet),
                            qido_alone(orthanc.dicomweb_url),
                        ],
                        FIND_RUNS,
                    )
                finally:
                    shutil.rmtree(out, ignore_errors=True)

                study = big[0].study_uid
                move_keys = ["0008,0052=STUDY", f"0020,000D={study}"]

                def move(port: int, aet: str) -> Callable[[], None]:
                    def run() -> None:
                        for path in scp.received_files():
                            path.unlink()
                        _check(
                            dcmtk.movescu(
                                LOCALHOST, port, move_keys, called_aet=aet, destination="BENCHSCP"
                            )
                        )
                        if len(scp.wait_for_files(MOVE_INSTANCES)) != MOVE_INSTANCES:
                            raise SystemExit("C-MOVE did not deliver every instance")

                    return run

                move_adapter = _median(move(adapter.server.port, ADAPTER_AET), MOVE_RUNS)
                move_orthanc = _median(move(orthanc.dicom_port, orthanc.aet), MOVE_RUNS)

                received = Path(
                    tempfile.mkdtemp(prefix="bench-get-", dir=shm if shm.is_dir() else work)
                )

                def get(port: int, aet: str) -> Callable[[], None]:
                    def run() -> None:
                        shutil.rmtree(received, ignore_errors=True)
                        received.mkdir()
                        _check(
                            dcmtk.getscu(
                                LOCALHOST, port, move_keys, called_aet=aet, output_dir=received
                            )
                        )
                        count = sum(1 for _ in received.iterdir())
                        if count != MOVE_INSTANCES:
                            raise SystemExit(f"C-GET delivered {count} != {MOVE_INSTANCES}")

                    return run

                try:
                    get_adapter, get_orthanc = _interleaved_medians(
                        [
                            get(adapter.server.port, ADAPTER_AET),
                            get(orthanc.dicom_port, orthanc.aet),
                        ],
                        GET_RUNS,
                    )
                finally:
                    shutil.rmtree(received, ignore_errors=True)
            finally:
                adapter.stop()
        scp.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    find_ratio = find_adapter / find_orthanc
    move_speed = move_orthanc / move_adapter
    print()
    print(f"C-FIND STUDY level, {STUDIES} matches (median of {FIND_RUNS}):")
    print(f"  adapter (QIDO-RS)   {find_adapter * 1000:8.1f} ms")
    print(f"  Orthanc own C-FIND  {find_orthanc * 1000:8.1f} ms")
    print(f"  adapter / Orthanc   {find_ratio:8.2f}x time   (target <= 2.0x)")
    print(f"  QIDO-RS alone       {find_qido * 1000:8.1f} ms "
          f"({find_qido / find_orthanc:.2f}x Orthanc's C-FIND: the store's share, no DIMSE)")
    print(f"  adapter / QIDO-RS   {find_adapter / find_qido:8.2f}x time   (what the adapter adds)")
    print(f"C-MOVE of {MOVE_INSTANCES} instances to storescp (median of {MOVE_RUNS}):")
    print(
        f"  adapter (WADO-RS)   {move_adapter * 1000:8.1f} ms "
        f"({MOVE_INSTANCES / move_adapter:6.0f} instances/s)"
    )
    print(
        f"  Orthanc own C-MOVE  {move_orthanc * 1000:8.1f} ms "
        f"({MOVE_INSTANCES / move_orthanc:6.0f} instances/s)"
    )
    print(f"  adapter speed       {move_speed:8.2f}x Orthanc's (target >= 0.3x)")
    print(f"C-GET of {MOVE_INSTANCES} instances by getscu (median of {GET_RUNS}, taking turns):")
    print(
        f"  adapter (WADO-RS)   {get_adapter * 1000:8.1f} ms "
        f"({MOVE_INSTANCES / get_adapter:6.0f} instances/s)"
    )
    print(
        f"  Orthanc own C-GET   {get_orthanc * 1000:8.1f} ms "
        f"({MOVE_INSTANCES / get_orthanc:6.0f} instances/s)"
    )
    print(f"  adapter speed       {get_orthanc / get_adapter:8.2f}x Orthanc's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
