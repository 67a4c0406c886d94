"""DICOMweb (PS3.18): addresses, multipart bodies, STOW/QIDO/WADO client."""
