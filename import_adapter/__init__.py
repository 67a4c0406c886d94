"""The import adapter: a DIMSE SCP in front of a DICOMweb store."""
