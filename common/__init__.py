"""Shared library of the adapters: DICOMweb client, auth, DIMSE helpers, statuses."""
