"""DICOM encoding helpers: Part 10 assembly and dataset scanning."""
