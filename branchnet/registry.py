"""Registries: the one place that owns the names of a kind of plug-in (heads, optimisers,
schedules, loss weightings, training hooks, affinity measures ...) and what each name means.

A :class:`Registry` is a read-only mapping, name -> entry, in the order the names were
registered (the order the config's error messages list them in). An entry is the object
itself, or ``"module:attribute"``, imported on first use, so that a registry can list plug-ins
whose modules are expensive to import (a dataset, a measure that needs torch) without
importing them. Everything that accepts a name asks the registry, so that a name is written
once and an unknown name is an error everywhere (:meth:`Registry.lookup`).

The layer test (tests/test_layers.py) holds every ``"module:attribute"`` entry to the floor of
the registry's own module or below (docs/architecture.md, "Floors").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from branchnet.errors import BadInput, did_you_mean, unknown_choice

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry of one ``kind`` of plug-in (``"head"``, ``"optimizer"`` ...)."""

    def __init__(self, kind: str, entries: Mapping[str, T | str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: T | str) -> T | str:
        """Register ``entry`` (or its ``"module:attribute"``) as ``name``; a name is registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@HEADS.register("aspp")``."""

        def decorate(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorate

    def __getitem__(self, name: str) -> T:
        entry = self._entries[name]
        if isinstance(entry, str) and ":" in entry:
            module, _, attribute = entry.partition(":")
            entry = getattr(importlib.import_module(module), attribute)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    @property
    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def targets(self) -> dict[str, str]:
        """The ``"module:attribute"`` of every entry registered by name and not yet imported."""
        return {n: e for n, e in self._entries.items() if isinstance(e, str) and ":" in e}

    def lookup(self, name: str, what: str | None = None) -> T:
        """The entry of ``name``; :class:`BadInput` ``unknown <what> 'x' (did you mean ...); valid: ...``
        for any other name (``what`` defaults to the registry's kind)."""
        if name not in self._entries:
            raise unknown_choice(what or self.kind, str(name), self._entries)
        return self[name]

    def check(self, value: str, key: str, source: str) -> None:
        """The config's check of a setting that names an entry: :class:`BadInput`
        ``<source>: '<key>' is '<value>' (did you mean ...); valid: <names in order>``."""
        if value not in self._entries:
            raise BadInput(f"{source}: '{key}' is '{value}'{did_you_mean(value, self.names)}; "
                           f"valid: {', '.join(self.names)}")
