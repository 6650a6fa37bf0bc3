"""On-disk cache of what is slow to rebuild from a model file and cheap to reload: a GGUF file's
config, its tokenizer converted by transformers, its dequantized weights (safetensors, mmapped).

Where: $TRITIUM_CACHE_DIR, default ~/.cache/tritium; TRITIUM_CACHE_DIR=off (or 0 / none / an empty
value) turns the cache off. Layout, one slot per (kind, source file, variant):

    <root>/<kind>/<file name>-<hash of path and variant>/
        manifest.json   format, the key (source path, size, mtime, CRC of its first and last MiB;
                        tritium's version; the variant: dtype, ...), and each file's size and CRC32
        <files>         written by the entry's writer

An entry is used only if its manifest's key equals the current one (else it is stale) and every
file has its recorded size and CRC32 (else it is corrupt); either way it is rebuilt and replaced.
Entries are written to a temporary folder and renamed into place, so a reader never sees half an
entry. A cache folder that cannot be written (read-only, full) only costs the speed-up: a warning,
and the work is done without it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from typing import Any, Callable, Optional, TypeVar

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_OFF = ("", "0", "off", "none", "false", "no")
_EDGE_BYTES = 1 << 20  # the source's first and last MiB go into its identity
_CHUNK = 16 << 20
_warned: set[str] = set()

T = TypeVar("T")


def cache_root() -> Optional[str]:
    """The cache folder, or None when the user turned the cache off."""
    value = os.environ.get("TRITIUM_CACHE_DIR")
    if value is None:
        return os.path.join(os.path.expanduser("~"), ".cache", "tritium")
    if value.strip().lower() in _OFF:
        return None
    return os.path.abspath(os.path.expanduser(value))


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def file_crc32(path: str, start: int = 0, length: Optional[int] = None) -> int:
    crc, left = 0, length
    with open(path, "rb") as f:
        f.seek(start)
        while left is None or left > 0:
            chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            if left is not None:
                left -= len(chunk)
    return crc


def source_identity(path: str) -> dict[str, Any]:
    """What identifies a source file's content cheaply: path, size, mtime and the CRC of its first
    and last MiB (a file replaced by another of the same size and mtime is caught there)."""
    path = os.path.abspath(path)
    st = os.stat(path)
    edges = file_crc32(path, 0, _EDGE_BYTES) ^ file_crc32(path, max(st.st_size - _EDGE_BYTES, 0))
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "edges_crc32": edges}


class CacheSlot:
    """One entry's place: load() -> the reader's value or None; store(writer) fills it."""

    def __init__(self, kind: str, source_path: str, variant: dict[str, Any]):
        from tritium import __version__

        self.kind = kind
        self.path: Optional[str] = None
        root = cache_root()
        if root is None:
            return
        self.key = {"format": FORMAT_VERSION, "tritium": __version__, "kind": kind,
                    "source": source_identity(source_path), "variant": variant}
        slot_id = hashlib.sha256(json.dumps([os.path.abspath(source_path), variant], sort_keys=True).encode())
        self.path = os.path.join(root, kind, f"{os.path.basename(source_path)}-{slot_id.hexdigest()[:16]}")

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def load(self, reader: Callable[[str], T]) -> Optional[T]:
        """reader(folder) on a valid entry; None on a miss, a stale or a corrupt entry."""
        if self.path is None or not os.path.isdir(self.path):
            return None
        problem = self._check()
        if problem is None:
            try:
                return reader(self.path)
            except Exception as e:  # noqa: BLE001 - any failure to read means: rebuild
                problem = f"unreadable ({type(e).__name__}: {e})"
        logger.warning("tritium cache: %s entry %s is %s; rebuilding it", self.kind, self.path, problem)
        self._remove(self.path)
        return None

    def _check(self) -> Optional[str]:
        """None if the entry matches the key and its files are intact, else what is wrong."""
        try:
            with open(os.path.join(self.path, MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            return f"without a readable manifest ({e})"
        if manifest.get("key") != self.key:
            return "stale (its source file, tritium or the cache format changed)"
        for name, meta in manifest.get("files", {}).items():
            path = os.path.join(self.path, name)
            if not os.path.isfile(path) or os.path.getsize(path) != meta["size"]:
                return f"corrupt ({name} is missing or has the wrong size)"
            if file_crc32(path) != meta["crc32"]:
                return f"corrupt ({name} fails its CRC32 check)"
        return None

    def store(self, writer: Callable[[str], None]) -> bool:
        """writer(folder) writes the entry's files; they are checksummed and the folder renamed
        into place. False (with a warning) when the cache is off or cannot be written."""
        if self.path is None:
            return False
        parent = os.path.dirname(self.path)
        tmp = None
        try:
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
            writer(tmp)
            files = {}
            for dirpath, _, names in os.walk(tmp):
                for n in names:
                    full = os.path.join(dirpath, n)
                    files[os.path.relpath(full, tmp)] = {"size": os.path.getsize(full), "crc32": file_crc32(full)}
            with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
                json.dump({"key": self.key, "files": files}, f, indent=1)
            old = None
            if os.path.exists(self.path):  # a stale or concurrent entry: move it aside, then drop it
                old = tempfile.mkdtemp(prefix=".old-", dir=parent)
                os.rename(self.path, os.path.join(old, "entry"))
            os.rename(tmp, self.path)
            tmp = None
            if old:
                self._remove(old)
            return True
        except OSError as e:
            _warn_once(f"tritium cache: cannot write {parent} ({e}); running without the cache "
                       f"(set TRITIUM_CACHE_DIR to a writable folder, or to 'off')")
            return False
        finally:
            if tmp:
                self._remove(tmp)

    @staticmethod
    def _remove(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


def cached(slot: CacheSlot, reader: Callable[[str], T], build: Callable[[], T],
           writer: Callable[[str, T], None]) -> T:
    """The entry's value if valid, else build() (then stored with writer(folder, value))."""
    value = slot.load(reader)
    if value is not None:
        return value
    value = build()
    slot.store(lambda folder: writer(folder, value))
    return value
