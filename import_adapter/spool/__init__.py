"""The durable spool: store-and-forward that never loses an acknowledged instance.

On disk (``--persistent_file_storage_location DIR``)::

    DIR/incoming/              the DIMSE engine writes large C-STORE datasets here as they arrive
    DIR/staging/NAME           a receipt being committed to several queues (intent record)
    DIR/queues/KEY/NAME        one hard link per destination still to be served
    DIR/queues/KEY/destination.json   which destination KEY is
    DIR/dead-letter/KEY/NAME(.json)   given up on, with a sidecar saying why

A receipt is fsynced, then renamed (one destination) or linked (several) into the queues; it
is durable - and may be acknowledged - once it is in every queue. The file disappears when its
last link is removed. See :mod:`import_adapter.spool.disk` for the commit protocol and
:mod:`import_adapter.spool.queue` for the uploader.
"""
