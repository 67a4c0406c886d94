"""C-MOVE and C-GET -> QIDO-RS + WADO-RS: one retrieval core shared by both."""
