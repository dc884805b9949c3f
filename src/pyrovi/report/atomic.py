"""Atomic replacement of a report directory.

A crash (an exception in a renderer, a full disk, a killed process) must leave
either the previous report or the new one, never a half-written mix. Every file is
first written into a fresh staging directory; only when all of them are on disk does
the new report take the place of the old one:

* ``out_dir`` does not exist, or holds nothing but report files: the staging
  directory is created beside ``out_dir`` (same file system) and swapped in by
  ``rename``; the old directory is renamed aside first and removed last.
* ``out_dir`` holds other files of the user's (or is a symbolic link): nothing of
  the user's is touched. The staging directory is created inside ``out_dir`` and
  each file is moved into place with :func:`os.replace`, which is atomic per file.

The names of the staging directories start with ``.<out_dir name>.`` so that a
leftover of a killed process is easy to recognise.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = ["write_atomically"]

Renderer = Callable[[], bytes]
"""Returns the bytes of one file; called only once the staging directory exists."""


def write_atomically(
    out_dir: str | os.PathLike[str],
    files: Mapping[str, Renderer],
    owned: Iterable[str] = (),
) -> dict[str, Path]:
    """Render ``files`` and put them into ``out_dir`` so that a failure changes nothing.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The directory to write; it and its parent are created when missing.
    files : mapping of str to callable
        File name (no directory part) -> function returning the file's bytes. The
        functions are called in order, after the staging directory is created, so an
        exception in any of them leaves ``out_dir`` as it was.
    owned : iterable of str
        Further names in ``out_dir`` that belong to the report (e.g. an ``images``
        folder of an older version). A directory holding only these and ``files`` is
        replaced as a whole; one holding anything else is updated file by file.

    Returns
    -------
    dict of str to pathlib.Path
        File name -> path of the written file.

    Raises
    ------
    PermissionError
        If ``out_dir`` or its parent cannot be written (one-line message naming it).
    OSError
        If ``out_dir`` exists and is not a directory, or another file-system error.
    """
    out = Path(out_dir).absolute()
    names = list(files)
    for name in names:
        if not name or Path(name).name != name:
            raise ValueError(f"report file names must be bare names, got {name!r}")
    parent = out.parent
    _make_directory(parent)
    if out.is_symlink() or out.exists():
        if not out.is_dir():
            raise NotADirectoryError(
                f"cannot write the report: {out} exists and is not a directory"
            )
        whole = not out.is_symlink() and set(os.listdir(out)) <= set(names) | set(owned)
    else:
        whole = True

    stage = _staging_directory(parent if whole else out, out.name)
    try:
        for name, render in files.items():
            _write_file(stage / name, render())
        _fsync_directory(stage)
        if whole:
            _swap_in(stage, out)
        else:
            for name in names:
                os.replace(stage / name, out / name)
            _fsync_directory(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {name: out / name for name in names}


def _make_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError as err:
        raise PermissionError(
            f"cannot create the report directory {path}: permission denied"
        ) from err
    except FileExistsError as err:
        raise NotADirectoryError(
            f"cannot create the report directory {path}: a file is in the way"
        ) from err
    except OSError as err:
        raise OSError(
            err.errno, f"cannot create the report directory {path}: {err.strerror}"
        ) from err


def _staging_directory(where: Path, base: str) -> Path:
    """A new, empty directory ``where/.<base>.tmp-<random>`` (mode from the umask)."""
    for _ in range(100):
        path = where / f".{base}.tmp-{secrets.token_hex(6)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except PermissionError as err:
            raise PermissionError(
                f"cannot write the report: directory {where} is not writable"
            ) from err
        except OSError as err:
            raise OSError(
                err.errno, f"cannot write the report in directory {where}: {err.strerror}"
            ) from err
        return path
    raise FileExistsError(f"cannot create a staging directory in {where}")  # pragma: no cover


def _write_file(path: Path, content: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _swap_in(stage: Path, out: Path) -> None:
    """Put ``stage`` at ``out``; a previous ``out`` is renamed aside, then removed."""
    if not out.exists():
        os.rename(stage, out)
        _fsync_directory(out.parent)
        return
    os.chmod(stage, stat.S_IMODE(out.stat().st_mode))  # keep the old directory's mode
    aside = out.parent / f".{out.name}.old-{secrets.token_hex(6)}"
    os.rename(out, aside)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(aside, out)  # put the old report back
        raise
    _fsync_directory(out.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _fsync_directory(path: Path) -> None:
    """Flush a directory entry to disk where the platform allows it (not on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError as err:  # pragma: no cover - some file systems refuse
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):
            raise
    finally:
        os.close(fd)
