"""Shutting the DIMSE listener down without losing what associations are doing.

Once the listener stops accepting: open associations get ``grace`` seconds to finish on their
own; then new requests are refused (the lifecycle drains), in-flight operations get up to
``inflight_timeout``; each association still open answers one more request (refused while
draining: the SCU learns its fate instead of losing it to an abort) and is then aborted; one
that stays idle is aborted after a short linger, and a busy one once its request is answered
or ``inflight_timeout`` ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from common.dimse.fast.scp import AcceptorAssociation
from common.lifecycle import Lifecycle

LOG = logging.getLogger(__name__)

#: Seconds an association may stay idle after shutdown asked it to end.
_STOP_LINGER = 0.5
_POLL = 0.02


def _wait(
    associations: Callable[[], list[AcceptorAssociation]],
    timeout: float,
    still: Callable[[AcceptorAssociation], bool],
) -> None:
    """Wait up to ``timeout`` s while any association is ``still`` something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(still(assoc) for assoc in associations()):
        time.sleep(_POLL)


def drain(
    associations: Callable[[], list[AcceptorAssociation]],
    lifecycle: Lifecycle,
    grace: float,
    inflight_timeout: float,
) -> None:
    """Drain and end the associations (see the module docstring); the listener has stopped."""
    LOG.info("stopped accepting associations; draining %d", len(associations()))
    # Only established associations are waited for: a connection that has not even sent its
    # A-ASSOCIATE-RQ (a port probe, a stalled peer) must not hold up the shutdown.
    _wait(associations, grace, lambda assoc: assoc.is_established)
    lifecycle.start_draining()
    if not lifecycle.wait_idle(inflight_timeout):
        LOG.warning("%d operations still running at shutdown", lifecycle.inflight)
    for assoc in associations():
        requestor = assoc.requestor
        LOG.warning(
            "aborting association from %s@%s:%s at shutdown",
            requestor.ae_title or "-", requestor.address, requestor.port,
        )
        assoc.request_stop()
    _wait(associations, min(_STOP_LINGER, inflight_timeout), lambda assoc: True)
    for assoc in associations():
        if not assoc.is_busy:
            assoc.abort()
    _wait(associations, inflight_timeout, lambda assoc: assoc.is_busy)
    for assoc in associations():
        assoc.abort()
    LOG.info("DIMSE listener stopped")
