"""Installed size and distribution count of the core install and of each extra, for the README's "Installing" table.

    .venv/bin/python scripts/extras_sizes.py

Run it with the interpreter of an environment that has .[all,dev] installed (`make install`). For each extra it takes
the requirement tree of ``assay[extra]`` (as scripts/lock.py does) and adds up the bytes of every file the installed
distributions list in their RECORD (what pip wrote, byte-code included), Assay itself excluded.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lock import ROOT, closure, project_requirements  # noqa: E402


def installed_bytes(name: str) -> int:
    dist = distribution(name)
    total = 0
    for f in dist.files or []:
        if f.size is not None:
            total += f.size
        else:  # RECORD lists itself and some byte-code without a size
            path = Path(dist.locate_file(f))
            total += path.stat().st_size if path.is_file() else 0
    return total


def measure(extras: tuple[str, ...]) -> tuple[int, int, list[tuple[int, str]]]:
    dists = closure(project_requirements(extras))
    sizes = sorted(((installed_bytes(n), n) for n in dists), reverse=True)
    return len(dists), sum(s for s, _ in sizes), sizes


def main() -> None:
    extras = list(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])
    core_count, core_size, core_sizes = measure(())
    top = ", ".join(f"{n} {s / 1e6:.0f} MB" for s, n in core_sizes[:3])
    print(f"| core | {core_size / 1e6:,.0f} MB | {core_count} | largest: {top} |")
    for extra in extras:
        count, size, sizes = measure((extra,))
        core_names = {n for _, n in core_sizes}
        top = ", ".join([f"{n} {s / 1e6:.0f} MB" for s, n in sizes if n not in core_names][:3])
        print(f"| {extra} | {size / 1e6:,.0f} MB | {count} | largest added: {top} |")


if __name__ == "__main__":
    main()
