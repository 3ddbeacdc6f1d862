"""``python -m components.store``: print the model families and the catalogue as Markdown tables;
``python -m components.store --write docs/models.md`` replaces the generated block of that document (re-run it
after a family is registered or the catalogue changes: a test checks the document is current)."""

from __future__ import annotations

import sys
from pathlib import Path

from components.store.catalog import models_markdown, with_generated_tables


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        doc = Path(argv[1])
        doc.write_text(with_generated_tables(doc.read_text()))
        return 0
    if argv:
        sys.stderr.write("usage: python -m components.store [--write docs/models.md]\n")
        return 2
    sys.stdout.write(models_markdown() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
