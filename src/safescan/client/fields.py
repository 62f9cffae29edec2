"""Reading the institution's JSON answers into typed values: the dataclass is the wire schema.

Every answer type of :mod:`safescan.client.answers` (and :mod:`.answers_merchant`,
:mod:`.admin`, :mod:`.wallet`) is a frozen dataclass read by ONE reader, :func:`read`, driven
by its field types (resolved once per class): ``str`` is text, ``int`` an integer (never a
boolean or a float), ``bool`` a boolean, ``bytes`` standard base64 text, a ``StrEnum`` one of
its values, ``Literal[...]`` one of those, ``X | None`` X or ``null``, ``tuple[X, ...]`` an
array of X, ``dict`` an object, ``Any`` anything, a dataclass an object read the same way.
``Annotated`` adds a rule (``Parse``, ``Check``, ``Amount`` of :mod:`safescan.api.schema`); the
field metadata :func:`wire` renames a field's key, reads it from the enclosing object (:data:`SAME`)
or leaves it off the wire. A field with a default may be absent.

* anything else is :class:`~safescan.client.errors.InstitutionProtocolError`, naming the
  answer and the field (its path: ``secret.version``, ``orders[2].state``): never a
  ``KeyError`` or ``TypeError`` from deep inside a caller;
* fields the client does not know are tolerated (a newer institution may add fields) and kept:
  every answer's ``to_json()`` is the document as received, so what a command prints with
  ``--json`` is what the institution answered.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    Self,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from safescan.api.schema import Check, Parse
from safescan.client.errors import InstitutionProtocolError
from safescan.code.errors import SafescanError

T = TypeVar("T")
Reader = Callable[[Any, str], Any]  # (JSON value, its path for errors) -> the typed value

_KEY = "safescan.wire"  # a field's metadata: its wire key (SAME: the enclosing object; None: none)
_REQUIRED = "safescan.wire.required"
SAME = "."


def malformed(what: str, detail: str) -> InstitutionProtocolError:
    """The typed error of an answer that is not what the protocol says."""
    return InstitutionProtocolError(f"the institution's {what} answer is malformed: {detail}")


class _Bad(Exception):
    """A malformed value at ``detail`` (:func:`read` makes it the typed error)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def wire(key: str | None, *, required: bool = False) -> dict[str, object]:
    """A dataclass field's metadata: read it from wire key ``key`` (:data:`SAME`: from the
    enclosing object itself; None: it is not on the wire, give it a default); ``required``: it
    must be on the wire although it has a default (for constructors elsewhere). Use as
    ``field(metadata=wire("object"))``."""
    return {_KEY: key, _REQUIRED: required}


@dataclass(frozen=True)
class Answer:
    """What every answer type shares: :meth:`from_json` (the one reader) and the document as
    received (``doc``; not compared, not shown), which :meth:`to_json` gives back. A subclass
    names itself in errors: ``class OrderView(Answer, what="order")``."""

    doc: Mapping[str, Any] = field(
        default_factory=dict, repr=False, compare=False, kw_only=True, metadata=wire(None)
    )
    what: ClassVar[str] = "answer"

    def __init_subclass__(cls, what: str = "", **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if what:
            cls.what = what

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """Parse the answer (a malformed one is
        :class:`~safescan.client.errors.InstitutionProtocolError`)."""
        return read(cls, doc, cls.what)

    @classmethod
    def from_wire(cls, doc: object, where: str) -> Self:
        """Read by the field types (:func:`fields_of`); an answer whose form varies overrides
        this (``where``: its path in the enclosing answer, for errors)."""
        return fields_of(cls, doc, where)

    def to_json(self) -> dict[str, Any]:
        """The institution's document, as received (a copy: changing it changes nothing)."""
        return copy.deepcopy(dict(self.doc))


def read(kind: type[T], doc: object, what: str) -> T:
    """``doc`` read as the dataclass ``kind`` (``what`` names the answer in errors)."""
    try:
        return _object(kind, doc, "")
    except _Bad as exc:
        raise malformed(what, exc.detail) from None


def one(doc: object, key: str, kind: type[T], what: str) -> T:
    """The field ``key`` of the answer object ``doc``, read as ``kind``."""
    try:
        return cast(T, _field(_object_doc(doc, ""), key, _reader(kind), ""))
    except _Bad as exc:
        raise malformed(what, exc.detail) from None


def rows_of(kind: type[T], doc: object, key: str, what: str) -> tuple[T, ...]:
    """The ``key`` array of the answer object ``doc``, each row a ``kind``."""
    try:
        rows = _field(_object_doc(doc, ""), key, _array(_reader(kind), tuple), "")
    except _Bad as exc:
        raise malformed(what, exc.detail) from None
    return cast(tuple[T, ...], rows)


# --- the readers, one per type hint (made once) ------------------------------------------------


def _object_doc(doc: object, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _Bad(f"{where or 'it'} is not a JSON object")
    return doc


def _field(doc: dict[str, Any], key: str, reader: Reader, where: str) -> Any:
    path = f"{where}.{key}" if where else key
    if key not in doc:
        raise _Bad(f"{path} is missing")
    return reader(doc[key], path)


def _object(kind: type[T], doc: object, where: str) -> T:
    if issubclass(kind, Answer):
        return cast(T, kind.from_wire(doc, where))
    return fields_of(kind, doc, where)


def fields_of(kind: type[T], doc: object, where: str) -> T:
    """``doc`` read as the dataclass ``kind``, field by field, by their types (a malformed
    value raises an internal error that :func:`read` turns into the typed one)."""
    obj = _object_doc(doc, where)
    values: dict[str, Any] = {}
    for name, key, reader, may_be_absent in _schema(kind):
        if key == SAME:
            values[name] = reader(obj, where)
        elif key in obj or not may_be_absent:
            values[name] = _field(obj, key, reader, where)
    if issubclass(kind, Answer):
        values["doc"] = obj
    return kind(**values)


_Schema = tuple[tuple[str, str, Reader, bool], ...]
_SCHEMAS: dict[type, _Schema] = {}
_READERS: dict[object, Reader] = {}


def _schema(kind: type) -> _Schema:
    """(field name, wire key, reader, may be absent) of each field the wire carries (the type
    hints are resolved once per class)."""
    if (known := _SCHEMAS.get(kind)) is not None:
        return known
    hints = get_type_hints(kind, include_extras=True)
    out = []
    for f in dataclasses.fields(kind):
        key = f.metadata.get(_KEY, f.name)
        if key is None or not f.init:
            continue
        absent = not f.metadata.get(_REQUIRED) and (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        out.append((f.name, key, _reader(hints[f.name]), absent))
    _SCHEMAS[kind] = schema = tuple(out)
    return schema


def _simple(kind: type, what: str) -> Reader:
    def simple(value: Any, where: str) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _Bad(f"{where} is not {what}")
        return value

    return simple


def _array(item: Reader, make: type) -> Reader:
    def array(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            raise _Bad(f"{where} is not an array")
        return make(item(v, f"{where}[{i}]") for i, v in enumerate(value))

    return array


def _enum(kind: type[Enum]) -> Reader:
    def enum(value: Any, where: str) -> Any:
        if not isinstance(value, str):
            raise _Bad(f"{where} is not text")
        try:
            return kind(value)
        except ValueError:
            raise _Bad(f"{where} {value[:40]!r} is not a known value") from None

    return enum


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise _Bad(f"{where} is not text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{where} is not base64") from None


def _annotated(inner: Reader, rules: tuple[Any, ...]) -> Reader:
    parse = next((r.fn for r in rules if isinstance(r, Parse)), None)
    checks = [r for r in rules if isinstance(r, Check)]

    def annotated(value: Any, where: str) -> Any:
        if parse is None:
            got = inner(value, where)
        else:
            try:
                got = parse(value)
            except SafescanError as exc:
                raise _Bad(f"{where}: {exc.message}") from None
            except (TypeError, ValueError) as exc:
                raise _Bad(f"{where}: {exc}") from None
        for check in checks:
            if not check.test(got):
                raise _Bad(f"{where} {check.fails}")
        return got

    return annotated


def _literal(allowed: tuple[Any, ...]) -> Reader:
    def literal(value: Any, where: str) -> Any:
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise _Bad(f"{where} is not {' or '.join(map(repr, allowed))}")
        return value

    return literal


def _optional(inner: Reader) -> Reader:
    return lambda value, where: None if value is None else inner(value, where)


def _nested(kind: type) -> Reader:
    return lambda value, where: _object(kind, value, where)


_SIMPLE: dict[Any, Reader] = {
    str: _simple(str, "text"),
    int: _simple(int, "an integer"),
    bool: _simple(bool, "a boolean"),
    dict: _simple(dict, "a JSON object"),
    bytes: _b64,
    Any: lambda value, where: value,
}


def _reader(hint: object) -> Reader:
    """The reader of one type hint (made once per hint)."""
    if (known := _READERS.get(hint)) is None:
        known = _READERS[hint] = _make_reader(hint)
    return known


def _make_reader(hint: Any) -> Reader:
    origin, args = get_origin(hint), get_args(hint)
    if hint in _SIMPLE or origin in (dict, Mapping):
        return _SIMPLE[dict if origin else hint]
    if origin is Annotated:
        return _annotated(_reader(args[0]), hint.__metadata__)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return _optional(_reader(next(a for a in args if a is not type(None))))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _array(_reader(args[0]), tuple)
    if origin is list:
        return _array(_reader(args[0]), list)
    if origin is Literal:
        return _literal(args)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _nested(hint)
    raise TypeError(f"the client has no JSON reader for {hint!r}")


__all__ = [
    "SAME",
    "Answer",
    "fields_of",
    "malformed",
    "one",
    "read",
    "rows_of",
    "wire",
]
