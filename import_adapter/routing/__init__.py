"""Routing received instances to destinations (DICOMweb stores, DIMSE peers) by filters."""
