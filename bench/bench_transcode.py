"""Import adapter with in-transit transformation: throughput and memory against passthrough.

Not a test: it prints figures. On one corpus of small CT/MR instances (explicit VR little endian,
``tests.support.samples.make_corpus``), each phase runs ``dcmsend`` -> import adapter (a real
subprocess) -> a fresh, empty Orthanc, one association, and reports instances/s, MB/s and the
adapter's peak RSS (VmHWM):

    passthrough        no transformation (the baseline, measured in the same run)
    j2k-lossless       --store_compress_to_transfer_syntax 1.2.840.10008.1.2.4.90
    chc-basic          --redact_filter_profile CHC_BASIC (streamed header rewrite)
    chc+j2k            both

Each phase sends one warm-up instance first (not timed); the clock stops when dcmsend returns,
that is when the adapter has answered the last C-STORE, which it does only after Orthanc accepted
the instance. Run from the repository root, preferably in a private network namespace::

    unshare -n -- bash -c 'ip link set lo up && python -m bench.bench_transcode'
    python -m bench.bench_transcode --count 100 --phases passthrough,j2k-lossless
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.adapters import IMPORT_AET, AdapterProcess
from tests.support.dcmtk import dcmsend, dcmsend_summary
from tests.support.orthanc import OrthancServer
from tests.support.samples import SampleInstance, make_corpus

MB = 1_000_000
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
PHASES: dict[str, list[str]] = {
    "passthrough": [],
    "j2k-lossless": ["--store_compress_to_transfer_syntax", J2K_LOSSLESS],
    "chc-basic": ["--redact_filter_profile", "CHC_BASIC"],
    "chc+j2k": [
        "--redact_filter_profile", "CHC_BASIC",
        "--store_compress_to_transfer_syntax", J2K_LOSSLESS,
    ],
}  # fmt: skip


@dataclass
class Result:
    phase: str
    sent: int
    ok: int
    stored: int
    seconds: float
    nbytes: int
    peak_rss_mb: float
    error: str = ""

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def run_phase(
    phase: str, corpus: list[SampleInstance], warm: SampleInstance, work: Path
) -> Result:
    orthanc = OrthancServer(workdir=Path(tempfile.mkdtemp(prefix="orthanc-", dir=work)))
    try:
        orthanc.start()
        args = ["--dicomweb_address", orthanc.dicomweb_url, *PHASES[phase]]
        with AdapterProcess(args, log_path=work / f"adapter-{phase}.log") as adapter:
            warm_result = dcmsend("127.0.0.1", adapter.port, [warm.path], IMPORT_AET)
            if warm_result.returncode != 0:
                raise RuntimeError(f"warm-up failed:\n{adapter.log()[-2000:]}")
            started = time.perf_counter()
            result = dcmsend(
                "127.0.0.1", adapter.port, [s.path for s in corpus], IMPORT_AET, timeout=1800
            )
            seconds = time.perf_counter() - started
            rss = adapter.peak_rss_mb()
            adapter.terminate()
            ok = dcmsend_summary(result).get("with status SUCCESS", 0)
            error = "" if result.returncode == 0 else adapter.log()[-2000:]
        stored = orthanc.count_instances() - 1
    finally:
        orthanc.cleanup()
        shutil.rmtree(orthanc.workdir, ignore_errors=True)
    nbytes = sum(s.size for s in corpus)
    return Result(phase, len(corpus), ok, stored, seconds, nbytes, rss, error)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_transcode", description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="corpus instances (500)")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases")
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"unknown phases {unknown}; known: {list(PHASES)}")
    work = Path(tempfile.mkdtemp(prefix="bench-transcode-"))
    results: list[Result] = []
    try:
        corpus = make_corpus(work / "corpus", args.count + 1)
        warm, corpus = corpus[0], corpus[1:]
        print(f"corpus: {len(corpus)} CT/MR instances, "
              f"{sum(s.size for s in corpus) / MB:.1f} MB, explicit VR little endian")  # fmt: skip
        header = (f"{'phase':<14} {'ok/sent':>9} {'stored':>6} {'seconds':>8} {'inst/s':>8} "
                  f"{'MB/s':>7} {'peak RSS':>9} {'vs passthrough':>15}")  # fmt: skip
        print(header, flush=True)
        for phase in phases:
            result = run_phase(phase, corpus, warm, work)
            results.append(result)
            baseline = next((r for r in results if r.phase == "passthrough"), None)
            ratio = (
                f"{result.per_second / baseline.per_second:14.2f}x"
                if baseline is not None and baseline.per_second
                else f"{'-':>15}"
            )
            print(
                f"{phase:<14} {f'{result.ok}/{result.sent}':>9} {result.stored:>6} "
                f"{result.seconds:>8.2f} {result.per_second:>8.1f} "
                f"{result.nbytes / MB / result.seconds:>7.1f} {result.peak_rss_mb:>6.1f} MB "
                f"{ratio}" + (f"\n  FAILED:\n{result.error}" if result.error else ""),
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.error or r.ok != r.sent for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
