"""Reading the institution's JSON answers into typed values, one checked field at a time.

Every answer type of :mod:`safescan.client.answers` (and :mod:`.answers_merchant`) is built
from its JSON in its own ``from_json`` with a :class:`Fields` reader. The rules, the same for
every answer:

* a field the answer documents must be there with its JSON type (an integer is never a
  boolean or a float; text is never a number); ``null`` only where the answer documents it;
  an enum field (order states, statuses ...) must hold one of the enum's values;
* anything else is :class:`~safescan.client.errors.InstitutionProtocolError`, naming the
  answer and the field: never a ``KeyError`` or ``TypeError`` from deep inside a caller;
* fields the client does not know are tolerated (a newer institution may add fields) and kept:
  every answer's ``to_json()`` is the document as received, so what a command prints with
  ``--json`` is what the institution answered.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self, TypeVar

from safescan.client.errors import InstitutionProtocolError

E = TypeVar("E", bound=StrEnum)


def malformed(what: str, detail: str) -> InstitutionProtocolError:
    """The typed error of an answer that is not what the protocol says."""
    return InstitutionProtocolError(f"the institution's {what} answer is malformed: {detail}")


@dataclass(frozen=True)
class Answer:
    """What every answer type shares: the document as received (``doc``; not compared, not
    shown) and :meth:`to_json`, which gives it back."""

    doc: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """Parse the answer (each answer type has its own; a malformed answer is
        :class:`~safescan.client.errors.InstitutionProtocolError`)."""
        raise NotImplementedError(cls.__name__)

    def to_json(self) -> dict[str, Any]:
        """The institution's document, as received (a copy: changing it changes nothing)."""
        return copy.deepcopy(dict(self.doc))


class Fields:
    """The checked fields of one JSON object of an answer (``what`` names it in errors)."""

    def __init__(self, doc: object, what: str) -> None:
        if not isinstance(doc, dict):
            raise malformed(what, "not a JSON object")
        self.doc: dict[str, Any] = doc
        self.what = what

    def _get(self, name: str) -> Any:
        if name not in self.doc:
            raise malformed(self.what, f"{name} is missing")
        return self.doc[name]

    def _wrong(self, name: str, kind: str) -> InstitutionProtocolError:
        return malformed(self.what, f"{name} is not {kind}")

    def text(self, name: str) -> str:
        """A text field."""
        value = self._get(name)
        if not isinstance(value, str):
            raise self._wrong(name, "text")
        return value

    def opt_text(self, name: str) -> str | None:
        """A text field that may be ``null``."""
        return None if self._get(name) is None else self.text(name)

    def integer(self, name: str) -> int:
        """An integer field (never a boolean)."""
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "an integer")
        return value

    def opt_integer(self, name: str) -> int | None:
        """An integer field that may be ``null``."""
        return None if self._get(name) is None else self.integer(name)

    def flag(self, name: str) -> bool:
        """A boolean field."""
        value = self._get(name)
        if not isinstance(value, bool):
            raise self._wrong(name, "a boolean")
        return value

    def enum(self, name: str, kind: type[E]) -> E:
        """A field holding one of ``kind``'s values."""
        value = self.text(name)
        try:
            return kind(value)
        except ValueError:
            raise malformed(self.what, f"{name} {value[:40]!r} is not a known value") from None

    def opt_enum(self, name: str, kind: type[E]) -> E | None:
        """An enum field that may be ``null``."""
        return None if self._get(name) is None else self.enum(name, kind)

    def obj(self, name: str) -> dict[str, Any]:
        """A JSON object field."""
        value = self._get(name)
        if not isinstance(value, dict):
            raise self._wrong(name, "a JSON object")
        return value

    def opt_obj(self, name: str) -> dict[str, Any] | None:
        """A JSON object field that may be ``null``."""
        return None if self._get(name) is None else self.obj(name)

    def array(self, name: str) -> list[Any]:
        """A JSON array field."""
        value = self._get(name)
        if not isinstance(value, list):
            raise self._wrong(name, "an array")
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        """An array of text."""
        values = self.array(name)
        if not all(isinstance(v, str) for v in values):
            raise self._wrong(name, "an array of text")
        return tuple(values)

    def b64(self, name: str) -> bytes:
        """A standard base64 field, decoded."""
        try:
            return base64.b64decode(self.text(name), validate=True)
        except ValueError:
            raise self._wrong(name, "base64") from None

    def has(self, name: str) -> bool:
        """Whether the answer carries ``name`` (an optional field), null or not."""
        return name in self.doc


T = TypeVar("T")


def rows_of(parse: Callable[[object], T], doc: object, name: str, what: str) -> tuple[T, ...]:
    """The ``name`` array of the answer object ``doc``, each row parsed by ``parse`` (a
    ``from_json``)."""
    return tuple(parse(r) for r in Fields(doc, what).array(name))


__all__ = ["Answer", "Fields", "malformed", "rows_of"]
