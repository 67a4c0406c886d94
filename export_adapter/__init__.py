"""The export adapter: Pub/Sub notifications -> WADO-RS -> C-STORE (or STOW-RS) to a peer."""
