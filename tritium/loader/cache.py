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

The manifest machinery (write_checked_folder / check_folder: sizes and CRC32s of every file, per
CHECK_CHUNK bytes so big files verify on every core at once) also serves saved engines
(loader/saved_engine.py).
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

FORMAT_VERSION = 2  # 2: per-chunk CRC32s
MANIFEST = "manifest.json"
_OFF = ("", "0", "off", "none", "false", "no")
_EDGE_BYTES = 1 << 20  # the source's first and last MiB go into its identity
_CHUNK = 16 << 20
CHECK_CHUNK = 256 << 20  # manifest CRCs cover this many bytes each
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


def chunk_crc32s(path: str) -> list[int]:
    """CRC32 of each CHECK_CHUNK-byte piece of the file, computed on every core (zlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    size = os.path.getsize(path)
    starts = range(0, max(size, 1), CHECK_CHUNK)
    if len(starts) == 1:
        return [file_crc32(path)]
    with ThreadPoolExecutor(min(len(starts), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda start: file_crc32(path, start, CHECK_CHUNK), starts))


def write_manifest(folder: str, key: Any, extra: Optional[dict[str, Any]] = None) -> None:
    """Record every file under `folder` (size and CRC32s) with `key` in folder/manifest.json."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, folder)
            if rel != MANIFEST:
                files[rel] = {"size": os.path.getsize(full), "crc32": chunk_crc32s(full)}
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as f:
        json.dump({"key": key, "files": files, **(extra or {})}, f, indent=1)


def read_manifest(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError("the manifest has no file list")
    return manifest


def check_files(folder: str, manifest: dict[str, Any]) -> Optional[str]:
    """None if every file the manifest lists has its size and CRC32s, else what is wrong."""
    for name, meta in manifest["files"].items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != meta["size"]:
            return f"{name} has {os.path.getsize(path)} bytes, {meta['size']} were written"
        if chunk_crc32s(path) != meta["crc32"]:
            return f"{name} fails its CRC32 check (its content changed after it was written)"
    return None


def write_folder_atomically(dest: str, writer: Callable[[str], None], key: Any,
                            extra: Optional[dict[str, Any]] = None) -> None:
    """writer(tmp) fills a temporary folder beside `dest`; its manifest is written and the folder
    renamed to `dest`, replacing an existing one only once the new one is complete. OSError
    propagates (the temporary folder is removed)."""
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        writer(tmp)
        write_manifest(tmp, key, extra)
        _open_as_umask_allows(tmp)
        old = None
        if os.path.exists(dest):  # a stale or concurrent entry: move it aside, then drop it
            old = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.rename(dest, os.path.join(old, "entry"))
        os.rename(tmp, dest)
        tmp = None
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread a
    moment): Linux's /proc/self/status; 0o022 where that is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _open_as_umask_allows(folder: str) -> None:
    """The permissions a plain mkdir / open would have given: mkdtemp makes its folder 0700 and
    safetensors writes 0600, which would keep an engine built by one user from a server run by
    another."""
    mask = _umask()
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


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
            manifest = read_manifest(self.path)
        except (OSError, ValueError) as e:
            return f"without a readable manifest ({e})"
        if manifest.get("key") != self.key:
            return "stale (its source file, tritium or the cache format changed)"
        problem = check_files(self.path, manifest)
        return f"corrupt ({problem})" if problem else None

    def store(self, writer: Callable[[str], None]) -> bool:
        """writer(folder) writes the entry's files; they are checksummed and the folder renamed
        into place. False (with a warning) when the cache is off or cannot be written."""
        if self.path is None:
            return False
        parent = os.path.dirname(self.path)
        try:
            write_folder_atomically(self.path, writer, self.key)
            return True
        except OSError as e:
            _warn_once(f"tritium cache: cannot write {parent} ({e}); running without the cache "
                       f"(set TRITIUM_CACHE_DIR to a writable folder, or to 'off')")
            return False

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
