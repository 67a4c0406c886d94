"""``python -m common.echo HOST PORT [--aec AET]``: C-ECHO a DIMSE service and check the status.

Used by the Helm chart's ``helm test`` hook (it runs in the adapter's own image) and handy for
checking a deployment by hand. Exits 0 when the association is accepted and the C-ECHO answers
Success, 1 otherwise, printing one line that says which.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.dimse.fast.acse import ProposedContext
from common.dimse.fast.constants import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
from common.dimse.fast.scu import Timeouts
from common.dimse.fast.transport import DimseProtocolError, ReleaseRequestedError
from common.dimse.sender import PeerAddress, request_association
from common.errors import AssociationRejectedError, DimseError
from common.status import Status

#: Verification in the one transfer syntax every DICOM peer must accept (PS3.5 10.1).
_CONTEXT = ProposedContext(1, VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,))
#: The Maximum Length Received we announce (a C-ECHO response is a few dozen bytes).
_MAX_PDU = 1 << 16


def echo(host: str, port: int, called_aet: str, calling_aet: str, timeout: float) -> str | None:
    """C-ECHO ``called_aet`` at ``host:port``; None on success, else what went wrong."""
    peer = PeerAddress(called_aet, host, port)
    try:
        assoc = request_association(
            peer,
            calling_aet=calling_aet,
            contexts=[_CONTEXT],
            max_length=_MAX_PDU,
            timeouts=Timeouts(connect=timeout, acse=timeout, dimse=timeout, network=timeout),
        )
    except AssociationRejectedError:
        return f"association rejected by {peer} (wrong AE title?)"
    except DimseError as exc:
        return f"no association with {host}:{port} (unreachable, refused or aborted: {exc})"
    try:
        context = next(iter(assoc.contexts.values()), None)
        if context is None:
            return f"{peer} accepted no Verification context"
        try:
            response = assoc.c_echo(1, context)
        except (OSError, DimseProtocolError, ReleaseRequestedError) as exc:
            return f"C-ECHO to {peer} failed: no response ({exc})"
    finally:
        assoc.release()
    if response.status != Status.SUCCESS:
        return f"C-ECHO to {peer} failed: status 0x{response.status:04X}"
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
