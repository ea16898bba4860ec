"""The code fingerprint a run records: it only resumes, or joins a fleet's shards, with the same code."""
from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def modules_of(*names: str) -> list[Path]:
    """The files of the generator's modules ``names`` ("catalog", "render"): a module's file, or every
    module of a package, in a stable order (sorted by path; caches and other files left out)."""
    files: list[Path] = []
    for name in names:
        package = HERE / name
        if package.is_dir():
            files += sorted(package.rglob("*.py"), key=lambda p: p.relative_to(HERE).as_posix())
        else:
            files.append(HERE / f"{name}.py")
    return files


def code_fingerprint(*names: str) -> str:
    """12 hex digits of sha256 over the modules ``names`` (see :func:`modules_of`), each with its path
    relative to ``generator/``, so code moved between the modules of a package changes it too."""
    h = hashlib.sha256()
    for path in modules_of(*names):
        h.update(path.relative_to(HERE).as_posix().encode() + b"\x00")
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
