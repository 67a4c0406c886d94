"""``python -m import_adapter``: the same as ``dicom-adapter import``."""

import sys

from common.cli.main import run
from import_adapter.cli import command

if __name__ == "__main__":
    sys.exit(run(command, prog_name="python -m import_adapter"))
