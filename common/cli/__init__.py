"""The ``dicom-adapter`` command line."""
