"""What became of the C-STORE sub-operations of one C-MOVE/C-GET.

The retrieval core records each sub-operation as it settles (the peer's status, or none when
it could not be sent or got no answer) and reads the counts for each response and the final
status from here. What a status counts as is the peer failure table's
(:data:`common.status.PEER_FAILURE_TABLE`, its sub-operation column).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.status import SUCCESS, DimseStatus, Status, SubOperationAction, rule_for_store_status


@dataclass(frozen=True)
class SubOperation:
    """One settled C-STORE sub-operation.

    Attributes:
        size: encoded dataset bytes sent (0 when nothing was sent).
        status: the peer's status, or None when no response arrived.
    """

    size: int
    status: DimseStatus | None

    @property
    def action(self) -> SubOperationAction:
        """What the sub-operation counts as (failed when no status came)."""
        if self.status is None:
            return SubOperationAction.FAILED
        action = rule_for_store_status(self.status).sub_operation
        return SubOperationAction.FAILED if action is None else action

    @property
    def ok(self) -> bool:
        """The peer stored the instance (success or warning)."""
        return self.action in (SubOperationAction.COMPLETED, SubOperationAction.WARNING)


class SubOperationTally:
    """Counts one request's sub-operations."""

    def __init__(self) -> None:
        self.completed = 0
        self.failed = 0
        self.warning = 0

    def record(self, status: DimseStatus | None, size: int) -> SubOperation:
        """Count a sub-operation.

        Args:
            status: the peer's status, or None when it was not sent or got no answer.
            size: the bytes sent.
        """
        done = SubOperation(size, status)
        action = done.action
        if action is SubOperationAction.COMPLETED:
            self.completed += 1
        elif action is SubOperationAction.WARNING:
            self.warning += 1
        else:
            self.failed += 1
        return done

    def final_status(self) -> DimseStatus:
        """The final status once every sub-operation was performed (PS3.4 C.4.2.1.4)."""
        if not self.failed and not self.warning:
            return SUCCESS
        if self.failed and not self.completed and not self.warning:
            return DimseStatus(Status.OUT_OF_RESOURCES_SUB_OPERATIONS)  # 0xA702: all failed
        return DimseStatus(Status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES)  # 0xB000
