"""Regenerate the README's generated sections (flag tables, failure tables) from the code.

``python scripts/gen_docs.py`` rewrites README.md in place; ``--check`` exits 1 when the README
is out of date (the test suite runs the check, so the docs cannot drift from the CLI).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.cli.main import SUBCOMMANDS  # noqa: E402
from common.status import failure_table_markdown, peer_failure_table_markdown  # noqa: E402


def flags_table(command: click.Command) -> str:
    """A Markdown table of a command's options."""
    rows = ["| flag | env variable | default | meaning |", "| --- | --- | --- | --- |"]
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or param.name == "help":
            continue
        names = " ".join(f"`{o}`" for o in param.opts)
        env = f"`{param.envvar}`" if isinstance(param.envvar, str) else ""
        value = param.to_info_dict()["default"]  # public API: unset defaults come back as None
        if param.is_flag:
            default = "off"
        elif value is None or value == "":
            default = ""
        else:
            default = f"`{value}`"
        text = (param.help or "").replace("|", "\\|")
        rows.append(f"| {names} | {env} | {default} | {text} |")
    return "\n".join(rows)


def sections() -> dict[str, str]:
    """Generated section name -> content."""
    out = {
        "status-table": failure_table_markdown(),
        "peer-status-table": peer_failure_table_markdown(),
    }
    for name, target in SUBCOMMANDS.items():
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        out[f"{name}-flags"] = flags_table(getattr(module, attribute))
    return out


def render(readme: str) -> str:
    """The README with every generated section replaced."""
    for name, content in sections().items():
        pattern = re.compile(
            rf"(<!-- BEGIN {re.escape(name)} -->\n)(?:.*?\n)?(<!-- END {re.escape(name)} -->)", re.S
        )
        readme = pattern.sub(
            lambda m, text=content: m.group(1) + text + "\n" + m.group(2),  # type: ignore[misc]
            readme,
        )
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    options = parser.parse_args()
    path = ROOT / "README.md"
    current = path.read_text()
    fresh = render(current)
    if options.check:
        if fresh != current:
            print("README.md is out of date: run python scripts/gen_docs.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
