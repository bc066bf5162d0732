"""Generate security.md from SECURITY.md at build time (the repository file is the source)."""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "SECURITY.md"

with mkdocs_gen_files.open("security.md", "w") as out:
    out.write(SOURCE.read_text(encoding="utf-8"))
