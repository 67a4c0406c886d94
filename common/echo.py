"""``python -m common.echo HOST PORT [--aec AET]``: C-ECHO a DIMSE service and check the status.

Used by the Helm chart's ``helm test`` hook (it runs in the adapter's own image) and handy for
checking a deployment by hand. Exits 0 when the association is accepted and the C-ECHO answers
Success, 1 otherwise, printing one line that says which.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from common.status import Status


def echo(host: str, port: int, called_aet: str, calling_aet: str, timeout: float) -> str | None:
    """C-ECHO ``called_aet`` at ``host:port``; None on success, else what went wrong."""
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called_aet)
    if not assoc.is_established:
        if assoc.is_rejected:
            return f"association rejected by {called_aet}@{host}:{port} (wrong AE title?)"
        return f"no association with {host}:{port} (unreachable, refused or aborted)"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(status.Status) if status and "Status" in status else None
    if code != Status.SUCCESS:
        shown = "no response" if code is None else f"status 0x{code:04X}"
        return f"C-ECHO to {called_aet}@{host}:{port} failed: {shown}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, C-ECHO, print the outcome; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m common.echo", description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--aec", default="IMPORTADAPTER", help="called AE title")
    parser.add_argument("--aet", default="ECHOSCU", help="our (calling) AE title")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per step")
    args = parser.parse_args(argv)
    problem = echo(args.host, args.port, args.aec, args.aet, args.timeout)
    if problem:
        print(f"FAIL: {problem}", file=sys.stderr)
        return 1
    print(f"OK: C-ECHO to {args.aec}@{args.host}:{args.port} answered Success")
    return 0


if __name__ == "__main__":
    sys.exit(main())
