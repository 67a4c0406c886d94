"""Store-and-forward benchmark: instances/s with ``--auto_ack_cstore`` vs the synchronous mode.

Not a test: it prints figures. On one corpus of small CT/MR instances (500 by default), for each
mode, with a fresh Orthanc and a fresh spool each time:

    legacy     dcmsend -> adapter (no spool) -> Orthanc        the pre-spool baseline
    sync       dcmsend -> adapter (spool, answer after upload) -> Orthanc
    auto-ack   dcmsend -> adapter (spool, answer once durable) -> Orthanc

it reports the time until dcmsend has its last answer ("SCU done") and until every instance is
in Orthanc ("stored"), as instances/s. One warm-up instance per phase is sent untimed. One
association (one dcmsend), so the synchronous modes upload one instance at a time while the
auto-ack mode uploads with ``--upload_concurrency`` workers behind the SCU's back.

Run from the repository root, best in a private network namespace like the tests::

    unshare -n -- bash -c 'ip link set lo up && python -m bench.bench_spool'
    python -m bench.bench_spool --count 100          # a quick run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.dcmtk import dcmsend, dcmsend_summary
from tests.support.orthanc import OrthancServer
from tests.support.samples import make_corpus

MODES: dict[str, list[str]] = {
    "legacy": [],
    "sync": ["--persistent_file_storage_location", "{spool}"],
    "auto-ack": ["--persistent_file_storage_location", "{spool}", "--auto_ack_cstore"],
}


def run_mode(mode: str, files: list[Path], warm: Path, workdir: Path) -> tuple[float, float]:
    """Seconds until the SCU is done and until everything is stored."""
    spool = workdir / f"spool-{mode}"
    with OrthancServer(workdir=workdir / f"orthanc-{mode}") as store:
        args = [a.format(spool=spool) for a in MODES[mode]]
        args += ["--dicomweb_address", store.dicomweb_url, "--spool_min_free_disk_mb", "0"]
        with AdapterProcess(args, log_path=workdir / f"adapter-{mode}.log") as adapter:
            dcmsend("127.0.0.1", adapter.port, [warm], IMPORT_AET)
            while store.count_instances() < 1:
                time.sleep(0.02)
            started = time.perf_counter()
            result = dcmsend("127.0.0.1", adapter.port, files, IMPORT_AET)
            scu_done = time.perf_counter() - started
            summary = dcmsend_summary(result)
            if result.returncode != 0:
                raise RuntimeError(f"{mode}: dcmsend failed: {summary}")
            while store.count_instances() < len(files) + 1:
                time.sleep(0.02)
            stored = time.perf_counter() - started
    return scu_done, stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="instances in the corpus")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-spool-"))
    try:
        corpus = make_corpus(workdir / "corpus", options.count + 1)
        warm, files = corpus[0].path, [s.path for s in corpus[1:]]
        size = sum(p.stat().st_size for p in files) / 1e6
        print(f"{len(files)} instances, {size:.1f} MB, one dcmsend association")
        print(f"{'mode':<10} {'SCU done s':>11} {'inst/s':>8} {'stored s':>9} {'inst/s':>8}")
        for mode in MODES:
            scu_done, stored = run_mode(mode, files, warm, workdir)
            print(
                f"{mode:<10} {scu_done:>11.2f} {len(files) / scu_done:>8.0f} "
                f"{stored:>9.2f} {len(files) / stored:>8.0f}"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
