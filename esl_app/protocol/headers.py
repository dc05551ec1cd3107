"""An ordered, case-insensitive multimap of header fields.

FreeSWITCH repeats some headers (CHANNEL_HANGUP_COMPLETE carries ``Hangup-Cause`` twice) and looks
names up case-insensitively, so a plain dict loses information. ``Headers`` keeps every pair in wire
order; ``get``/``[]`` return the first occurrence, ``get_all`` every one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

ARRAY_PREFIX = "ARRAY::"


class Headers:
    __slots__ = ("_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        index: dict[str, list[str]] = {}
        for name, value in self._items:
            index.setdefault(name.lower(), []).append(value)
        self._index = index

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._index.get(name.lower())
        return values[0] if values else default

    def get_last(self, name: str, default: str | None = None) -> str | None:
        values = self._index.get(name.lower())
        return values[-1] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def get_array(self, name: str) -> list[str]:
        """A header serialized as ``ARRAY::v1|:v2`` split into its values (a plain value gives one)."""
        value = self.get(name)
        if value is None:
            return []
        if value.startswith(ARRAY_PREFIX):
            return value[len(ARRAY_PREFIX) :].split("|:")
        return [value]

    def __getitem__(self, name: str) -> str:
        values = self._index.get(name.lower())
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def to_dict(self) -> dict[str, str]:
        """First occurrence of each name, in wire order (convenient for logs and assertions)."""
        out: dict[str, str] = {}
        for name, value in self._items:
            out.setdefault(name, value)
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
