"""``python -m export_adapter``: the same as ``dicom-adapter export``."""

import sys

from common.cli.main import run
from export_adapter.cli import command

if __name__ == "__main__":
    sys.exit(run(command, prog_name="python -m export_adapter"))
