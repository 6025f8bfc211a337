"""Writing artifacts so that a crash never leaves a half-written file, and reading checkpoints
so that no pickled code runs.

Every artifact is written to a temporary name in the destination directory
(``.<stem>.<pid>-<random>.tmp<suffix>``) and then renamed over the final name
(``os.replace`` is atomic on POSIX within a filesystem). The final file gets the permissions
of any file the user creates (``0666 & ~umask``), not mkstemp's private 0600. Temporary
files left by a killed process (its PID no longer runs) are removed by the next write into
the same directory. A write that fails for lack of space or permission is a
:class:`~branchnet.errors.BadInput` naming the file (exit 2), and the old file stays.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping

from branchnet.errors import BadInput
from branchnet.moved import moved_attribute


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be written there.

    Raises :class:`BadInput` naming the directory when it cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create output directory {path}: {exc.strerror}; "
                       "choose a writable location (e.g. --runs runs/NAME)") from None
    if not path.is_dir():
        raise BadInput(f"output path {path} exists and is not a directory; choose another")
    if not os.access(path, os.W_OK | os.X_OK):
        raise BadInput(f"output directory {path} is not writable; choose a writable location")
    return path


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a file the user creates: ``0666 & ~umask``."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode of a directory the user creates: ``0777 & ~umask``."""
    return 0o777 & ~umask()


_TMP = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp")


def remove_stale_temporaries(directory: Path) -> None:
    """Delete the temporary files that killed processes left in ``directory``.

    A temporary name carries its writer's PID; one whose process no longer runs (or runs
    under another user, on another host sharing the disk: then it is kept) is removed.
    """
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = _TMP.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_error(path: Path, exc: OSError) -> BadInput:
    """The one-line error of a failed write of ``path`` (disk full, permission, ...)."""
    reason = exc.strerror or type(exc).__name__
    hint = "free some space there or choose another --runs/--out" if exc.errno == errno.ENOSPC else \
        "choose a writable location (--runs/--out)"
    return BadInput(f"could not write {path.name} into {path.parent}: {reason}; {hint}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (or ``suffix``) so that libraries which
    look at the extension (numpy, matplotlib) write the right format. On an exception
    the temporary file is removed and ``path`` is left untouched; an OSError while writing
    (no space left, no permission) becomes a one-line :class:`BadInput` naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{path} is a directory; give a file name to write (e.g. {path / ('out' + (suffix or path.suffix or '.json'))})")
    parent = ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    remove_stale_temporaries(parent)
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}-", suffix=f".tmp{suffix}", dir=parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
                raise write_error(path, exc) from None
            raise
    finally:
        if tmp.exists():
            tmp.unlink()


class HashingWriter:
    """A binary file that adds up the bytes written through it and their SHA-256 (the digest of
    the file without reading it back)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def digest(self) -> dict[str, Any]:
        """``{"bytes": size, "sha256": hex digest}`` of what was written (a run record's entry)."""
        return {"bytes": self.bytes, "sha256": self.sha256.hexdigest()}


def atomic_write_text(path: str | os.PathLike, text: str, written: dict[str, Any] | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8). ``written``, when given, receives the bytes
    and SHA-256 of the file (:meth:`HashingWriter.digest`)."""
    data = text.encode("utf-8")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    if written is not None:
        written.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2,
                      written: dict[str, Any] | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (NaN is refused: it is not JSON); ``written``
    as :func:`atomic_write_text`."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False, default=_json_default) + "\n",
                             written)


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON data: numpy and torch scalars become numbers, paths strings,
    tuples lists, and NaN or infinite numbers ``None`` (JSON has no NaN), so that writing the
    metadata of a finished network can never fail."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return str(obj)
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(obj, "ndim", 0) == 0:
        return json_safe(item())
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return json_safe(tolist())
    return str(obj)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """``np.savez_compressed`` to ``path`` atomically."""
    import numpy as np

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


#: What torch's zip writer says when a write fails (a full disk): "PytorchStreamWriter failed
#: writing file ...", or "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598".
TORCH_WRITE_FAILURES = ("writ", "unexpected pos", "inline_container")


def atomic_torch_save(path: str | os.PathLike, obj: Any, written: dict[str, Any] | None = None) -> Path:
    """``torch.save`` to ``path`` atomically. ``written``, when given, receives the bytes and
    SHA-256 of the file, hashed as it is written (one pass, no read back). A failed write (a full
    disk) is a one-line :class:`BadInput` naming the file (:func:`write_error`), whichever way
    torch reports it."""
    import torch

    with atomic_path(path) as tmp:
        try:
            if written is None:
                torch.save(obj, tmp)
            else:
                with open(tmp, "wb") as fh:
                    writer = HashingWriter(fh)
                    torch.save(obj, writer)
                written.update(writer.digest())
        except RuntimeError as exc:  # torch wraps a failed write (a full disk) in a RuntimeError
            if not any(sign in str(exc).lower() for sign in TORCH_WRITE_FAILURES):
                raise
            raise write_error(Path(path), OSError(errno.ENOSPC, "the file could not be written (no space left "
                                                                "on the device?)")) from None
    return Path(path)


def read_user_text(path: str | os.PathLike, what: str, expected: str) -> str:
    """The text of a file the user named (UTF-8, a BOM allowed); :class:`BadInput` in one line
    when it is missing, a directory, not UTF-8 or unreadable. ``what`` names the file
    ("candidates file"), ``expected`` what it should be ("a CSV file")."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{what} {path} is a directory; give {expected}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{what} {path} is not UTF-8 text; give {expected}") from None
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror}") from None


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a branchnet checkpoint with ``weights_only=True`` (no pickled code runs).

    Raises :class:`BadInput` when the file is missing, corrupt or not a checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns before refusing a pickle; our one line says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"checkpoint {path} is corrupt or not a torch checkpoint ({first[:120]}); "
                       "delete it and train again (or pass --force)") from None
    if not isinstance(obj, dict):
        raise BadInput(f"checkpoint {path} does not hold a branchnet checkpoint (a dict); retrain it")
    return obj


#: Names that moved in 0.3.0 (docs/architecture.md, "Moved modules").
_MOVED = {"to_jsonable": "branchnet.atomic:json_safe"}


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, name, _MOVED)
