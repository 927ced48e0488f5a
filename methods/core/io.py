"""Atomic file output and jsonl helpers.

Every result file is written to a temporary name in the same folder and renamed into place, so a
killed job never leaves a complete-looking file behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Works for files and folders: whatever the caller creates at the temporary path replaces
    ``path`` in one rename. On error the temporary is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to {target} for {path}")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a jsonl file; a malformed line raises an error naming the file and line number."""
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: malformed jsonl row ({e.msg})") from e
    return rows


def scan_jsonl(path: str | os.PathLike, on_bad: str = "error") -> tuple[list[dict], dict]:
    """Read a user-supplied jsonl file, counting bad lines instead of stopping at the first.

    Malformed lines (not UTF-8, not JSON, or not a JSON object) and blank lines are listed by line
    number in the returned report (``lines``: the line number of each row returned). ``on_bad="error"``
    raises on the first of them, naming file and line; ``"skip"`` leaves them out. Either way nothing
    is dropped without being counted."""
    rows, report = [], {"file": str(path), "malformed": [], "empty": [], "lines": []}
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            kind, why, obj = None, "", None
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line, kind, why = None, "malformed", f" (not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1})"
            if line is not None and not line.strip():
                kind = "empty"
            elif line is not None:
                try:
                    obj = json.loads(line)
                    kind, why = (None, "") if isinstance(obj, dict) else ("malformed", " (not a JSON object)")
                except json.JSONDecodeError as e:
                    kind, why = "malformed", f" (not JSON: {e.msg.removesuffix(' at')}, column {e.colno})"
            if kind is None:
                rows.append(obj)
                report["lines"].append(i)
                continue
            if on_bad == "error":
                raise ValueError(f"{path}:{i}: {kind} jsonl row{why}; fix the file or set bad_rows: skip in the data "
                                 f"section of the config to skip (and count) such rows")
            report[kind].append(i)
    return rows, report


def pairs_dir(data_dir: str | Path, name: str) -> Path:
    """Pair sets live beside the task data: <data>/../preferences, <data>/../contrast."""
    return Path(data_dir).parent / name
