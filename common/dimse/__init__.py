"""DIMSE helpers shared by the adapters (AE titles, socket options)."""
