"""Writing artifacts so that a crash never leaves a half-written file.

Every artifact is written to a temporary name in the destination directory and then
renamed over the final name (``os.replace`` is atomic on POSIX within a filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from branchnet.errors import BadInput


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (or ``suffix``) so that libraries which
    look at the extension (numpy, matplotlib) write the right format. On an exception
    the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    suffix = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (NaN is refused: it is not JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False, default=_json_default) + "\n")


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays turned into plain Python values."""
    return json.loads(json.dumps(obj, default=_json_default))


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


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a branchnet checkpoint with ``weights_only=True`` (no pickled code runs).

    Raises :class:`BadInput` when the file is missing, corrupt or not a checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"checkpoint {path} is corrupt or not a torch checkpoint ({first[:120]}); "
                       "delete it and train again (or pass --force)") from None
    if not isinstance(obj, dict):
        raise BadInput(f"checkpoint {path} does not hold a branchnet checkpoint (a dict); retrain it")
    return obj
