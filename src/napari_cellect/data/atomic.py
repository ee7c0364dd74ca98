"""Atomic writes: write to a temporary sibling, then rename it over the destination.

An interrupted export or autosave therefore never leaves a half-written file over a good one.
A write that fails (a full disk, no permission) raises :class:`~napari_cellect.errors.WriteError`
saying why and that the previous file is kept. A write killed before it could clean up (SIGKILL,
power loss) leaves a hidden temporary file; the next successful write of the same destination
removes it.
The temporary name lives in the destination's folder (so the final rename never crosses file
systems), is hidden, and ends with the destination's own name, so libraries that look at the
suffix (``np.save`` adds ``.npy``, tifffile, zarr) see the right extension.

- :func:`atomic_write` gives an open file object (``mode="w"`` / ``"wb"``), or the temporary path
  when ``mode=None``.
- :func:`atomic_path` gives a temporary path for writers that create a file *or a folder*
  (tifffile, zarr, geff); a folder replaces an existing folder of the same name (in one atomic
  swap on Linux).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from napari_cellect.errors import WriteError

logger = logging.getLogger(__name__)

#: prefix of every temporary name, so stale leftovers are easy to recognise
TEMP_PREFIX = ".cellect-tmp-"


def temp_sibling(path: str | os.PathLike[str]) -> Path:
    """A fresh, unused hidden path in ``path``'s folder that ends with ``path``'s name."""
    path = Path(path)
    while True:
        candidate = path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{path.name}")
        if not os.path.lexists(candidate):
            return candidate


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; folders cannot be opened for fsync on Windows, so skip there."""
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - exotic file systems
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                _fsync_file(Path(root) / name)
            _fsync_dir(Path(root))
    elif path.exists():
        _fsync_file(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _commit(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` to ``dest``. A file replaces atomically; a folder replaces an old folder
    by moving the old one aside first (``dest`` is briefly absent, but never half-written)."""
    if tmp.is_dir() and dest.exists():
        if not dest.is_dir():
            raise IsADirectoryError(f"cannot replace the file {dest} with a folder")
        if _exchange(tmp, dest):  # one atomic step: tmp now holds the old folder
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            old = temp_sibling(dest)
            os.replace(dest, old)
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old, dest)
                raise
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    _remove_leftovers(dest)


#: renameat2's flag that swaps two paths atomically (Linux >= 3.15, glibc >= 2.28)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step where the system can (Linux); False where it cannot,
    and the caller falls back to two renames (a kill between them leaves ``b`` missing)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # not on this file system
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove_leftovers(dest: Path) -> None:
    """Remove what earlier writes of ``dest`` left behind when their process was killed
    (SIGKILL, power loss) before it could clean up: the new file is in place, so they are stale.
    """
    pattern = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{8}-" + re.escape(dest.name))
    for leftover in dest.parent.glob(f"{TEMP_PREFIX}*"):
        if pattern.fullmatch(leftover.name):
            logger.info("removing %s, left by an interrupted write of %s", leftover.name, dest)
            _remove(leftover)


@contextmanager
def atomic_path(path: str | os.PathLike[str], fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it into place.

    The body may create a file or a folder at the yielded path. If the body raises, whatever
    it created is removed and ``path`` is left untouched. If the body creates nothing, nothing
    is moved and ``path`` is left untouched.

    Args:
        path: the final destination. Its folder must exist.
        fsync: flush the written data to disk before the rename (every file of a folder).
    """
    dest, tmp = _destination(path)
    with _removed_on_failure(tmp, dest):
        yield tmp
        if not os.path.lexists(tmp):
            logger.debug("atomic_path: nothing was written for %s", dest)
            return
        if fsync:
            _fsync_tree(tmp)
        _commit(tmp, dest)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str | None = "w",
    encoding: str | None = None,
    newline: str | None = None,
    fsync: bool = True,
) -> Iterator[Any]:
    """Write ``path`` atomically.

    With ``mode`` ``"w"``/``"wt"``/``"wb"`` it yields an open file object (text files default to
    UTF-8); with ``mode=None`` it yields the temporary path, like :func:`atomic_path`. The file
    is flushed, fsync'ed and renamed over ``path`` only if the body finishes without an error;
    otherwise the temporary file is removed and ``path`` keeps its old content.

    Args:
        path: the final destination. Its folder must exist.
        mode: a write mode, or None for a path.
        encoding: text encoding (text modes only); UTF-8 by default.
        newline: passed to :func:`open` (text modes only).
        fsync: flush the data to disk before the rename.
    """
    if mode is None:
        with atomic_path(path, fsync=fsync) as tmp:
            yield tmp
        return
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write: expected mode 'w', 'wt', 'wb' or None, found {mode!r}")
    binary = "b" in mode
    if binary and (encoding is not None or newline is not None):
        raise ValueError("atomic_write: encoding and newline apply to text modes only")
    dest, tmp = _destination(path)
    exclusive = mode.replace("w", "x")  # O_EXCL: never clobber a file we did not create
    handle: IO[Any]
    try:
        if binary:
            handle = open(tmp, exclusive)  # noqa: SIM115 - closed below
        else:
            handle = open(  # noqa: SIM115 - closed below
                tmp,
                exclusive,
                encoding=encoding or "utf-8",
                newline=newline,
            )
    except OSError as error:
        raise _write_error(dest, error) from error
    with _removed_on_failure(tmp, dest):
        with handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        _commit(tmp, dest)


def _destination(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``path`` and a fresh temporary sibling to write first; its folder must exist."""
    dest = Path(path)
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"cannot write {dest}: the folder {dest.parent} does not exist")
    return dest, temp_sibling(dest)


@contextmanager
def _removed_on_failure(tmp: Path, dest: Path) -> Iterator[None]:
    """Remove ``tmp`` when the block fails (``dest`` is untouched); an OSError is re-raised as
    the error that says why ``dest`` could not be written."""
    try:
        yield
    except OSError as error:
        _remove(tmp)
        raise _write_error(dest, error) from error
    except BaseException:
        _remove(tmp)
        raise


#: errno -> what it means for the person saving
_WRITE_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the disk is read-only",
}
if hasattr(errno, "EDQUOT"):  # not on Windows
    _WRITE_REASONS[errno.EDQUOT] = "the disk quota is used up"


def _write_error(dest: Path, error: OSError) -> WriteError:
    """What went wrong, in words, and that the previous file (if any) is kept."""
    if isinstance(error, WriteError):
        return error
    reason = _WRITE_REASONS.get(error.errno or -1, "the system refused")
    detail = error.strerror or str(error) or type(error).__name__
    kept = "the previous file is kept unchanged" if dest.exists() else "no file was written"
    message = f"cannot write {dest}: {reason} ({detail}); {kept}"
    if error.errno == errno.ENOSPC:
        message += "; free some space or save elsewhere"
    out = WriteError(message)
    out.errno = error.errno
    return out
