"""Files written whole or not at all: a uniquely named temporary file beside the target, flushed
to disk, then renamed over it. A reader, or a run resumed after a crash or power loss, sees the
old file or the new one, never half of one; two writers never share a temporary file. A set
of files that belong together (a checkpoint) is written whole in a side directory first, so
a failure while writing it (a full disk, a kill) leaves the old set as it was."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional, Union

_UMASK = os.umask(0)
os.umask(_UMASK)


def non_empty_path(path: Union[str, Path]) -> Path:
    """`path` as a Path; an empty string is refused (Path("") is the working directory, where a
    model or a run would be written unasked)."""
    if isinstance(path, str) and not path:
        raise ValueError("no directory given (an empty path): give one, or \".\" for the current directory")
    return Path(path)


@contextmanager
def atomic_file(path: Union[str, Path], binary: bool = False) -> Iterator[IO]:
    """A file object to write `path` through (UTF-8 text unless `binary`); it replaces `path`
    when the block ends without an exception, and is discarded otherwise."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():  # mkstemp named its temporary file instead
        raise FileNotFoundError(f"cannot write {path}: the folder {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make shared model files private
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


#: The side directories of `atomic_files`: one being written, and one written whole.
_WRITING, _WRITTEN = ".files-being-written", ".files-written"


@contextmanager
def atomic_files(directory: Union[str, Path], last: str) -> Iterator[Path]:
    """A directory to write a set of files into; when the block ends without an exception
    they replace their namesakes in `directory`, the file named `last` (the one that vouches
    for the others) last, and are discarded otherwise. Should the process die while they are
    moved in, `finish_atomic_files` moves in the rest."""
    directory = non_empty_path(directory)
    writing = directory / _WRITING
    shutil.rmtree(writing, ignore_errors=True)  # a set whose writing was cut short
    writing.mkdir(parents=True)
    try:
        yield writing
    except BaseException:
        shutil.rmtree(writing, ignore_errors=True)
        raise
    written = directory / _WRITTEN
    shutil.rmtree(written, ignore_errors=True)  # an older set never moved in: this one replaces it
    os.replace(writing, written)
    _fsync_directory(directory)
    finish_atomic_files(directory, last)


def finish_atomic_files(directory: Union[str, Path], last: str) -> None:
    """Moves into `directory` the files of a set `atomic_files` wrote whole but had not moved
    in when its process died (nothing if there is none), `last` last. Call it before reading
    the set. A file another process moved in meanwhile is left to it."""
    directory = Path(directory)
    written = directory / _WRITTEN
    if not written.is_dir() or written.is_symlink():  # a link could move another directory's files here
        return
    for f in sorted(written.iterdir(), key=lambda f: f.name == last):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f, directory / f.name)
    _fsync_directory(directory)
    with contextlib.suppress(OSError):  # gone, or a newer set already there (another writer's)
        written.rmdir()


def write_json(path: Union[str, Path], value: Any, default: Optional[Callable[[Any], Any]] = None) -> None:
    """`value` as indented JSON in `path`, atomically (`default` converts what JSON lacks)."""
    with atomic_file(path) as f:
        f.write(json.dumps(value, indent=2, default=default))


def _fsync_directory(directory: Path) -> None:
    """Makes the rename itself durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
