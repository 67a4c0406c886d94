"""Support layer for integration tests that run real components over the wire.

One module per component, each usable on its own:

- ``components``: the skip-or-fail policy for missing components (fails when ``CI=true``).
- ``ports``: free loopback ports and readiness polling.
- ``orthanc``: an Orthanc PACS with the DICOMweb plugin, in a temporary directory.
- ``dcmtk``: DCMTK command-line tools (``storescu``, ``dcmsend``, ...) and ``StoreSCP``.
- ``samples``: DICOM test data with fresh UIDs, built from files that pydicom ships.
- ``pubsub_emulator``: the Google Cloud Pub/Sub emulator and real client helpers.
- ``http_fault_server``: a DICOMweb sink and fault-injecting reverse proxy.
"""
