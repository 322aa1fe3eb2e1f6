"""A job folder's files as values: what a remote worker sends out, and what it changed since.

The Ray engine keeps the data folder on the head only (no shared file system). A job's folder
goes to the actor that runs it as `{relative path: bytes}`; the actor works in a scratch copy,
with the same library code as the embedded worker, and after every step sends back what that
code changed. The head applies the changes to the real folder, so it ends byte for byte as the
embedded worker would have left it.

`log.jsonl` grows by one line a step: it travels as the appended bytes, not the whole file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

APPENDED = ("log.jsonl",)  # files that only grow between two snapshots unless they shrink (a truncated log)


@dataclass
class FolderChanges:
    """What changed in a folder: files written anew, bytes appended to files, files deleted."""

    written: dict[str, bytes] = field(default_factory=dict)
    appended: dict[str, bytes] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.written or self.appended or self.deleted)


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (temporary files left out) as `{relative posix path: bytes}`."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not _temporary(path.name)}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """The inverse of `read_folder`, into an empty scratch folder."""
    for name, data in files.items():
        path = _inside(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def apply_changes(folder: Path, changes: FolderChanges) -> None:
    """Make `folder` (the head's job folder) match the worker's copy: atomic rewrites, appends, deletions."""
    for name, data in changes.written.items():
        path = _inside(folder, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    for name, data in changes.appended.items():
        path = _inside(folder, name)
        with path.open("ab") as handle:
            handle.write(data)
    for name in changes.deleted:
        _inside(folder, name).unlink(missing_ok=True)


class FolderMirror:
    """Remembers a folder's files (size and modification time) and reports what changed since the last look."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._seen = self._scan()
        self._grown = {name: (self.folder / name).read_bytes() for name in self._seen if Path(name).name in APPENDED}

    def _scan(self) -> dict[str, tuple[int, int, int]]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for path in self.folder.rglob("*"):
            if _temporary(path.name):
                continue
            try:
                info = path.stat()
            except FileNotFoundError:  # replaced or deleted while we looked: the next look sees it
                continue
            if stat.S_ISREG(info.st_mode):  # from the same stat: one system call a file, on every step
                found[path.relative_to(self.folder).as_posix()] = (info.st_size, info.st_mtime_ns, info.st_ino)
        return found

    def changes(self) -> FolderChanges:
        now = self._scan()
        changes = FolderChanges(deleted=sorted(set(self._seen) - set(now)))
        for name, key in now.items():
            if self._seen.get(name) == key:
                continue
            data = (self.folder / name).read_bytes()
            if Path(name).name in APPENDED:
                previous = self._grown.get(name)
                if previous is not None and data.startswith(previous):
                    changes.appended[name] = data[len(previous):]
                else:  # new, or rewritten shorter (a resumed run drops the steps after its checkpoint)
                    changes.written[name] = data
                self._grown[name] = data
            else:
                changes.written[name] = data
        self._seen = now
        return changes


def _temporary(name: str) -> bool:
    return name.endswith((".tmp", ".tmp.png")) or ".partial-" in name


def _inside(folder: Path, name: str) -> Path:
    """`folder / name`, refusing a name that would leave the folder (the head trusts no path it is sent)."""
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ValueError(f"{name!r} is not a path inside the job folder")
    return path
