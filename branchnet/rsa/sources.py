"""Where features come from: the :class:`FeatureSource` protocol and two implementations.

A feature source yields, for one task and a list of branch-point locations, the features
of K images in a fixed order, a batch at a time. The RDM engine (:mod:`branchnet.rsa.rdm`)
consumes sources and never needs all features at once; branchnet's trained models are one
more source (written where the models live), a features file (:class:`NpzFeatureSource`)
and in-memory arrays (:class:`ArrayFeatureSource`) are two others.

One entry of a batch is either an array or tensor of shape (B, ...) -- B consecutive
images -- or, for multi-resolution backbones (HRNet), a list of arrays (B, C_i, H_i, W_i)
that the engine pools and flattens one by one and concatenates along the feature axis.
numpy arrays and torch tensors (on CPU or GPU) are both accepted.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np

from branchnet.errors import BadInput

#: One entry of a batch: an array/tensor (B, ...) or a list of (B, C_i, H_i, W_i) maps.
FeatureBatch = Union[Any, Sequence[Any]]

#: Bytes of one location's rows per batch that the file-backed sources aim for.
BATCH_BYTES = 8 * 2**20


@runtime_checkable
class FeatureSource(Protocol):
    """Features of ``num_images`` images for every (task, location).

    Attributes:
        tasks: the N task names.
        locations: the D branch-point names, shallow to deep.
        num_images: K, the number of images every task's features cover.
    """

    tasks: list[str]
    locations: list[str]
    num_images: int

    def batches(self, task: str, locations: Sequence[int]) -> Iterator[list[FeatureBatch]]:
        """Yield batches for consecutive images (the same order for every task).

        Each yielded item is a list with one entry per index in ``locations`` (indices
        into :attr:`locations`); every entry of one item covers the same B >= 1 images.
        The iterator may be closed early (the engine stops after the images it needs).
        """
        ...


def batch_rows(row_bytes: int, num_locations: int = 1, target: int = BATCH_BYTES) -> int:
    """Images per batch so that one batch of ``num_locations`` locations is about ``target`` bytes."""
    rows = target // max(1, row_bytes * max(1, num_locations))
    return int(min(256, max(1, rows)))


class ArrayFeatureSource:
    """Features held in memory: ``features[task][location]`` is (K, ...) or a list of (K, C_i, H_i, W_i).

    Useful in tests, notebooks and for models whose features were extracted elsewhere.
    Arrays may be numpy arrays or torch tensors. ``batch_size`` images per batch (default:
    about :data:`BATCH_BYTES` per location).
    """

    def __init__(self, features: Mapping[str, Mapping[str, Any]], batch_size: int | None = None):
        if not features:
            raise BadInput("no features given; need features[task][location] arrays of shape (K, ...)")
        self.tasks = list(features)
        first = features[self.tasks[0]]
        self.locations = list(first)
        if not self.locations:
            raise BadInput(f"task '{self.tasks[0]}' has no locations; give at least one feature array")
        self._features = features
        k = None
        for task in self.tasks:
            missing = [loc for loc in self.locations if loc not in features[task]]
            if missing or len(features[task]) != len(self.locations):
                raise BadInput(f"task '{task}' must have features at exactly the locations "
                               f"{', '.join(self.locations)}; missing: {', '.join(missing) or '-'}")
            for loc in self.locations:
                parts = _parts(features[task][loc])
                sizes = {int(p.shape[0]) for p in parts}
                if len(sizes) != 1:
                    raise BadInput(f"features '{task}/{loc}': the maps of one location cover "
                                   f"different numbers of images {sorted(sizes)}")
                size = sizes.pop()
                if k is None:
                    k, first_key = size, f"{task}/{loc}"
                elif size != k:
                    raise BadInput(f"features '{task}/{loc}' cover K={size} images but '{first_key}' covers "
                                   f"K={k}; every task and location needs the same K images")
        self.num_images = int(k)
        if batch_size is None:
            parts = _parts(first[self.locations[0]])
            row_bytes = sum(int(np.prod(p.shape[1:])) * 4 for p in parts)
            batch_size = batch_rows(row_bytes, len(self.locations))
        self.batch_size = int(batch_size)

    def batches(self, task: str, locations: Sequence[int]) -> Iterator[list[FeatureBatch]]:
        arrays = [self._features[task][self.locations[d]] for d in locations]
        for start in range(0, self.num_images, self.batch_size):
            stop = min(start + self.batch_size, self.num_images)
            yield [[p[start:stop] for p in a] if isinstance(a, (list, tuple)) else a[start:stop]
                   for a in arrays]


def _parts(entry: Any) -> list[Any]:
    return list(entry) if isinstance(entry, (list, tuple)) else [entry]


# ---------------------------------------------------------------------------------------------
# Own features in a file (docs/design.md, "File formats")
# ---------------------------------------------------------------------------------------------

_KEY = re.compile(r"^([^/]+)/([^/]+)$")


class NpzFeatureSource:
    """Features from a ``.npz`` file with one array (K, ...) per key ``"<task>/<location>"``.

    Tasks and locations are taken in order of first appearance. The file is validated on
    opening from the array headers alone (keys, dtypes, shapes, same K everywhere, every
    (task, location) present); the values are then streamed a batch of rows at a time, so
    neither the file nor one array is ever held whole in memory. Both ``np.savez`` and
    ``np.savez_compressed`` files work.

    Raises :class:`BadInput` naming the file and the key at fault.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise BadInput(f"features file {self.path} does not exist; give an .npz with one array "
                           "(K, ...) per key 'task/location'")
        headers = _read_headers(self.path)
        if not headers:
            raise BadInput(f"features file {self.path} holds no arrays; it needs one array (K, ...) "
                           "per key 'task/location'")
        self.tasks: list[str] = []
        self.locations: list[str] = []
        self._members: dict[tuple[str, str], tuple[str, tuple[int, ...], np.dtype, bool]] = {}
        k = None
        for key, (member, shape, dtype, fortran) in headers.items():
            match = _KEY.match(key)
            if not match:
                raise BadInput(f"features file {self.path}: key '{key}' is not of the form "
                               "'task/location' (e.g. 'segment/layer3')")
            task, loc = match.groups()
            if dtype.kind not in "biuf":
                raise BadInput(f"features file {self.path}: '{key}' has dtype {dtype}; "
                               "features must be numbers (float or int)")
            if len(shape) < 2 or 0 in shape[1:]:
                raise BadInput(f"features file {self.path}: '{key}' has shape {shape}; it must be "
                               "(K, ...) with at least one feature per image")
            if k is None:
                k, first_key = shape[0], key
            elif shape[0] != k:
                raise BadInput(f"features file {self.path}: '{key}' covers K={shape[0]} images but "
                               f"'{first_key}' covers K={k}; every task and location needs the same K images")
            if task not in self.tasks:
                self.tasks.append(task)
            if loc not in self.locations:
                self.locations.append(loc)
            self._members[task, loc] = (member, shape, dtype, fortran)
        missing = [f"{t}/{loc}" for t in self.tasks for loc in self.locations if (t, loc) not in self._members]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise BadInput(f"features file {self.path} lacks key(s) {shown}; every task needs features "
                           "at every location")
        self.num_images = int(k)
        if batch_size is None:
            row_bytes = max(int(np.prod(shape[1:])) * 4 for _, shape, _, _ in self._members.values())
            batch_size = batch_rows(row_bytes, len(self.locations))
        self.batch_size = int(batch_size)

    def shape(self, task: str, location: str) -> tuple[int, ...]:
        """The stored shape (K, ...) of ``task/location``."""
        return self._members[task, location][1]

    def batches(self, task: str, locations: Sequence[int]) -> Iterator[list[FeatureBatch]]:
        with zipfile.ZipFile(self.path) as archive:
            readers = [_RowReader(archive, self._members[task, self.locations[d]], self.path)
                       for d in locations]
            try:
                for start in range(0, self.num_images, self.batch_size):
                    rows = min(self.batch_size, self.num_images - start)
                    yield [reader.read(rows) for reader in readers]
            finally:
                for reader in readers:
                    reader.close()


def _read_headers(path: Path) -> dict[str, tuple[str, tuple[int, ...], np.dtype, bool]]:
    """key -> (zip member, shape, dtype, fortran_order) for every ``.npy`` member of ``path``."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                key = member[:-4] if member.endswith(".npy") else member
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, fortran, dtype = _read_array_header(fh, version)
                if dtype.hasobject:
                    raise BadInput(f"features file {path}: '{key}' holds Python objects; "
                                   "features must be numeric arrays")
                headers[key] = (member, tuple(int(s) for s in shape), dtype, bool(fortran))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BadInput(f"features file {path} is not a readable .npz ({exc}); "
                       "write it with numpy.savez") from None
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"features file {path} holds a member that is not a .npy array ({first}); "
                       "write it with numpy.savez") from None
    return headers


def _read_array_header(fh: io.IOBase, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    try:  # 3.0 (utf-8 field names): numpy reads it only through a private helper
        from numpy.lib._format_impl import _read_array_header
    except ImportError:  # pragma: no cover - older numpy
        from numpy.lib.format import _read_array_header
    return _read_array_header(fh, version)


class _RowReader:
    """Reads a ``.npy`` member of a zip archive a few rows at a time (C order), decompressing as it goes."""

    def __init__(self, archive: zipfile.ZipFile, member: tuple[str, tuple[int, ...], np.dtype, bool],
                 path: Path):
        name, self.shape, self.dtype, fortran = member
        self.path, self.key = path, name[:-4] if name.endswith(".npy") else name
        if fortran:
            # Rows of a Fortran-ordered array are not contiguous: read it whole once.
            with archive.open(name) as fh:
                self._whole = np.load(fh, allow_pickle=False)
            self._fh = None
        else:
            self._whole = None
            self._fh = archive.open(name)
            version = np.lib.format.read_magic(self._fh)
            _read_array_header(self._fh, version)
        self._row = 0

    def read(self, rows: int) -> np.ndarray:
        if self._whole is not None:
            out = np.ascontiguousarray(self._whole[self._row:self._row + rows])
        else:
            out = np.empty((rows,) + self.shape[1:], dtype=self.dtype)
            view = memoryview(out.reshape(-1).view(np.uint8))
            filled = 0
            while filled < view.nbytes:
                try:
                    got = self._fh.readinto(view[filled:])
                except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                    raise BadInput(f"features file {self.path}: '{self.key}' cannot be read ({exc}); "
                                   "the file is corrupt, write it again") from None
                if not got:
                    raise BadInput(f"features file {self.path}: '{self.key}' ends after {self._row} images "
                                   f"(header says {self.shape[0]}); the file is truncated, write it again")
                filled += got
            if not out.dtype.isnative:
                out = out.astype(out.dtype.newbyteorder("="))
        self._row += rows
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
