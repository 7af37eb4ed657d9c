"""The typed payload machinery under every protocol message and file.

A type is a dataclass deriving from `Payload` whose fields are declared with `spec`
(checked kind, the type name PROTOCOL.md shows, a description): ``from_payload`` checks
every field (`ProtocolError`; unknown keys ignored), ``to_payload`` emits them in
declaration order, ``to_args`` / ``from_message`` / ``encode`` map them to OSC arguments
(one msgpack map, or plain arguments named by ``ARGS``). `protocol.doc` reads the same
declarations to write PROTOCOL.md's field tables.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, fields
from dataclasses import field as _dc_field
from typing import Any, ClassVar

from protocol.errors import ErrorCode
from protocol.osc import Message, ProtocolError, encode, field, payload


def spec(kind: Any, doc: str, *, type: str, default: Any = MISSING,
         factory: Any = MISSING, item: Any = None) -> Any:
    """A payload field: `kind` is what `protocol.osc.field` checks, `type` how PROTOCOL.md
    names it, `item` the type of a list's elements or a map's values (a `Payload`
    subclass is parsed recursively). No default: the field is required."""
    meta = {"kind": kind, "doc": doc, "type": type, "item": item}
    if factory is not MISSING:
        return _dc_field(default_factory=factory, metadata=meta)
    return _dc_field(default=default, metadata=meta)


def _wire(value: Any) -> Any:
    """A field value as msgpack/JSON-friendly plain types."""
    if isinstance(value, Payload):
        return value.to_payload()
    if isinstance(value, ErrorCode):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _items(value: Any, item: Any, name: str) -> Any:
    """Check (and parse, for `Payload` items) a list's elements or a map's values."""
    def one(v: Any) -> Any:
        if isinstance(item, type) and issubclass(item, Payload):
            return item.from_payload(v)
        if not isinstance(v, item) or (isinstance(v, bool) and item is not bool):
            raise ProtocolError(f"field {name!r} holds a value that is not "
                                f"{getattr(item, '__name__', item)}")
        return v
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ProtocolError(f"field {name!r} must have string keys")
        return {k: one(v) for k, v in value.items()}
    return [one(v) for v in value]


class Payload:
    """Base of every message and file type: fields declared with `spec`, checked on the
    way in, emitted in declaration order on the way out.

    ``OMIT_DEFAULTS``: leave fields at their default out of the payload (requests, so old
    servers see only what they know). ``ARGS``: plain-argument messages name their OSC
    arguments in order instead of carrying a msgpack map."""

    ADDRESS: ClassVar[str] = ""
    DIRECTION: ClassVar[str] = ""  # "request" | "push" | "file" | "part"
    #: Fields with a default for Python callers that a payload must still carry.
    WIRE_REQUIRED: ClassVar[tuple[str, ...]] = ()
    OMIT_DEFAULTS: ClassVar[bool] = False
    ARGS: ClassVar[tuple[str, ...] | None] = None

    def check(self) -> None:
        """Range checks beyond the types (raise `ProtocolError`)."""

    def _omit(self, f: Any, value: Any) -> bool:
        if not self.OMIT_DEFAULTS or f.name in self.WIRE_REQUIRED:
            return False
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        return value is None or value == default

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if not self._omit(f, value):
                out[f.name] = _wire(value)
        return out

    @classmethod
    def from_payload(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ProtocolError(f"{cls.__name__} payload must be a map")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            meta = f.metadata
            required = (f.default is MISSING and f.default_factory is MISSING) or (
                f.name in cls.WIRE_REQUIRED)
            kind = meta["kind"]
            nested = isinstance(kind, type) and issubclass(kind, Payload)
            value = field(data, f.name, dict if nested else kind, required=required)
            if value is None:
                continue
            if meta["item"] is not None:
                value = _items(value, meta["item"], f.name)
            elif nested:
                value = kind.from_payload(value)
            kwargs[f.name] = value
        obj = cls(**kwargs)
        obj.check()
        return obj

    def to_args(self) -> tuple[Any, ...]:
        """The OSC arguments: the payload map as one blob, or the plain arguments in
        order (trailing ones at their default left out)."""
        if self.ARGS is None:
            return (self.to_payload(),)
        out = [_wire(getattr(self, name)) for name in self.ARGS]
        defaults = {f.name: f.default for f in fields(self)}  # type: ignore[arg-type]
        while out and (out[-1] is None or (
                defaults[self.ARGS[len(out) - 1]] is not MISSING
                and out[-1] == defaults[self.ARGS[len(out) - 1]])):
            out.pop()
        return tuple(out)

    @classmethod
    def from_args(cls, args: tuple[Any, ...]) -> Any:
        """A plain-argument message from its OSC arguments."""
        assert cls.ARGS is not None
        if len(args) > len(cls.ARGS):
            raise ProtocolError(f"{cls.ADDRESS} takes at most {len(cls.ARGS)} arguments")
        return cls.from_payload(dict(zip(cls.ARGS, args, strict=False)))

    @classmethod
    def from_message(cls, msg: Message) -> Any:
        if cls.ARGS is not None:
            return cls.from_args(msg.args)
        return cls.from_payload(payload(msg))

    def encode(self) -> bytes:
        return encode(self.ADDRESS, *self.to_args())
