"""Benchmark: export adapter vs Orthanc's own C-STORE push, same 500 instances, same storescp.

Run: ``python bench/bench_export.py [--count 500] [--workers 8]`` (needs the Pub/Sub emulator
jar, Orthanc with the DICOMweb plugin and DCMTK). In one run it measures

- baseline: Orthanc ``POST /modalities/{id}/store`` (synchronous) of the instances to storescp;
- adapter: from publishing one notification per instance to storescp holding all of them
  (Pub/Sub emulator -> WADO-RS from the same Orthanc -> C-STORE to the same storescp);

and prints instances/s for each and the ratio. Not a test.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.dimse.sender import PeerAddress, SenderSettings
from export_adapter.app import ExportAdapter
from export_adapter.config import DimsePeerConfig, ExportConfig
from export_adapter.source import parse_source_address
from export_adapter.subscriber import FlowSettings
from tests.support.dcmtk import StoreSCP
from tests.support.orthanc import OrthancServer
from tests.support.pubsub_emulator import PubSubEmulator
from tests.support.samples import SampleInstance, make_corpus


def upload(orthanc: OrthancServer, samples: list[SampleInstance]) -> list[str]:
    ids: list[str] = [""] * len(samples)

    def work(offset: int) -> None:
        for index in range(offset, len(samples), 8):
            ids[index] = orthanc.upload(samples[index].path)["ID"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids


def clear(scp: StoreSCP) -> None:
    for path in scp.received_files():
        path.unlink()


def wait_files(scp: StoreSCP, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while len(scp.received_files()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(scp.received_files())} of {count} files arrived")
        time.sleep(0.01)


def orthanc_push(orthanc: OrthancServer, scp: StoreSCP, ids: list[str]) -> float:
    clear(scp)
    started = time.perf_counter()
    response = orthanc.session.post(
        f"{orthanc.http_url}/modalities/peer/store",
        json={"Resources": ids, "Synchronous": True},
        timeout=600,
    )
    response.raise_for_status()
    wait_files(scp, len(ids))
    return time.perf_counter() - started


def adapter_export(
    emulator: PubSubEmulator,
    orthanc: OrthancServer,
    scp: StoreSCP,
    samples: list[SampleInstance],
    workers: int,
    associations: int,
) -> float:
    clear(scp)
    topic, subscription = emulator.new_topic_and_subscription("bench", ack_deadline_seconds=60)
    config = ExportConfig(
        subscription_path=subscription,
        source=parse_source_address(orthanc.dicomweb_url),
        peer=DimsePeerConfig(
            peer=PeerAddress(scp.aet, scp.host, scp.port),
            sender=SenderSettings(calling_aet="EXPORTADAPTER"),
            max_associations=associations,
        ),
        flow=FlowSettings(workers=workers, max_messages=workers * 4),
    )
    adapter = ExportAdapter(config)
    adapter.start()
    try:
        time.sleep(0.5)  # the streaming pull is open before the clock starts
        started = time.perf_counter()
        futures = [
            emulator.publisher.publish(
                topic,
                f"/studies/{s.study_uid}/series/{s.series_uid}/instances/{s.sop_instance_uid}".encode(),
            )
            for s in samples
        ]
        for future in futures:
            future.result(timeout=60)
        # Done when the peer has confirmed every C-STORE, as Orthanc's synchronous push is.
        # The adapter runs in this process: polling storescp's directory here (a glob and a
        # stat of every file) would take the GIL from it, so its own counter is watched and the
        # files are checked after the clock stops.
        deadline = time.monotonic() + 600
        while adapter.counters.snapshot().exported < len(samples):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {adapter.counters.snapshot()} after 600 s")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        wait_files(scp, len(samples))
    finally:
        adapter.stop()
    counters = adapter.counters.snapshot()
    print(f"  adapter run: {elapsed:.2f} s, {counters}")
    if counters.exported < len(samples) or counters.permanent_failures:
        raise RuntimeError(f"adapter did not export everything: {counters}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each")
    parser.add_argument("--switch-interval", type=float, default=None)
    parser.add_argument("--associations", type=int, default=1, help="adapter associations")
    parser.add_argument("--fork", action="store_true", help="storescp --fork (many associations)")
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        with (
            PubSubEmulator() as emulator,
            StoreSCP(
                workdir / "scp" / "received", extra_args=["--fork"] if args.fork else []
            ) as scp,
        ):
            orthanc = OrthancServer(
                workdir=workdir / "orthanc",
                modalities={"peer": (scp.aet, scp.host, scp.port)},
            )
            with orthanc:
                samples = make_corpus(workdir / "corpus", args.count)
                ids = upload(orthanc, samples)
                total = sum(s.size for s in samples)
                print(
                    f"{args.count} instances, {total / args.count / 1024:.1f} KiB each, "
                    f"workers={args.workers}, adapter associations={args.associations}, "
                    f"storescp --fork={args.fork}"
                )
                baseline: list[float] = []
                ours: list[float] = []
                for _ in range(args.rounds):
                    baseline.append(orthanc_push(orthanc, scp, ids))
                    ours.append(
                        adapter_export(
                            emulator, orthanc, scp, samples, args.workers, args.associations
                        )
                    )
                for name, times in (("orthanc push", baseline), ("export adapter", ours)):
                    rates = ", ".join(f"{args.count / t:.0f}" for t in times)
                    print(f"{name:>15}: {rates} instances/s (best {args.count / min(times):.0f})")
                ratio = min(baseline) / min(ours)
                print(f"ratio adapter/orthanc (best of each): {ratio:.2f}x (target >= 0.4x)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
