"""C-FIND -> QIDO-RS: identifier translation, QIDO JSON -> Dataset, the C-FIND service."""
