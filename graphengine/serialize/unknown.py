"""Keeping what this version does not understand.

A file from a newer minor version may hold fields this version does not know,
anywhere in the message tree.  On load we keep a *skeleton* ModelProto: for
every message with unknown fields (or a `doc`, which the in-memory graph does
not hold), the skeleton has a message at the same place holding those fields
plus the key that finds it again (`name`, or `wrt` for gradient entries;
repeated messages without a key are matched by index).  It is stored,
serialized, in the graph's ModelRecord.unknown_fields.  On save the skeleton is grafted onto
the fresh ModelProto, so the fields come back where they were, for the nodes
that still exist.
"""

from __future__ import annotations

import warnings
from typing import Any

from google.protobuf import message as _message
from google.protobuf.unknown_fields import UnknownFieldSet

from ..proto import graphengine_pb2 as pb


def _is_repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf >= 6; `label` before
    return bool(is_repeated) if is_repeated is not None else field.label == field.LABEL_REPEATED


def _message_fields(descriptor: Any) -> list:
    """Fields holding messages, map fields excepted (they hold only strings here)."""
    return [
        f
        for f in descriptor.fields
        if f.message_type is not None and not f.message_type.GetOptions().map_entry
    ]


def _key_field(descriptor: Any) -> str | None:
    for key in ("name", "wrt"):
        if key in descriptor.fields_by_name:
            return key
    return None


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_unknown(field: Any) -> bytes:
    """One unknown field back in wire format (protobuf exposes them only decoded)."""
    number, wire = field.field_number, field.wire_type
    tag = _varint(number << 3 | wire)
    if wire == 0:
        return tag + _varint(field.data)
    if wire == 1:
        return tag + field.data.to_bytes(8, "little")
    if wire == 2:
        return tag + _varint(len(field.data)) + bytes(field.data)
    if wire == 5:
        return tag + field.data.to_bytes(4, "little")
    # wire == 3: a group, closed by an end-group tag.
    return tag + b"".join(_encode_unknown(f) for f in field.data) + _varint(number << 3 | 4)


def _unknown_bytes(msg: _message.Message) -> bytes:
    return b"".join(_encode_unknown(field) for field in UnknownFieldSet(msg))


def _skeleton(msg: _message.Message) -> _message.Message | None:
    """The skeleton of ``msg`` (see above), or None when nothing in it needs keeping."""
    skeleton = type(msg)()
    keep = False
    unknown = _unknown_bytes(msg)
    if unknown:
        skeleton.MergeFromString(unknown)
        keep = True
    if "doc" in msg.DESCRIPTOR.fields_by_name and msg.doc:
        skeleton.doc = msg.doc
        keep = True
    for field in _message_fields(msg.DESCRIPTOR):
        if _is_repeated(field):
            items = getattr(msg, field.name)
            subs = [_skeleton(item) for item in items]
            if not any(sub is not None for sub in subs):
                continue
            keyed = _key_field(field.message_type) is not None
            target = getattr(skeleton, field.name)
            for sub in subs:
                if sub is not None:
                    target.add().CopyFrom(sub)
                elif not keyed:  # an empty placeholder keeps the indices aligned
                    target.add()
            keep = True
        elif msg.HasField(field.name):
            sub = _skeleton(getattr(msg, field.name))
            if sub is not None:
                getattr(skeleton, field.name).CopyFrom(sub)
                keep = True
    if keep:
        key = _key_field(msg.DESCRIPTOR)
        if key is not None:
            setattr(skeleton, key, getattr(msg, key))
    return skeleton if keep else None


def _extract_preserved_bytes(model: pb.ModelProto) -> bytes:
    skeleton = _skeleton(model)
    return b"" if skeleton is None else skeleton.SerializeToString(deterministic=True)


def _graft(target: _message.Message, skeleton: _message.Message) -> None:
    """Put the skeleton's unknown fields and docs back onto the matching messages."""
    unknown = _unknown_bytes(skeleton)
    if unknown:
        target.MergeFromString(unknown)
    if "doc" in skeleton.DESCRIPTOR.fields_by_name and skeleton.doc and not target.doc:
        target.doc = skeleton.doc
    for field in _message_fields(skeleton.DESCRIPTOR):
        if _is_repeated(field):
            items = getattr(skeleton, field.name)
            targets = getattr(target, field.name)
            key = _key_field(field.message_type)
            if key is None:
                pairs = list(zip(targets, items))
            else:
                by_key = {getattr(t, key): t for t in targets}
                pairs = [(by_key[getattr(i, key)], i) for i in items if getattr(i, key) in by_key]
            for sub_target, sub_skeleton in pairs:
                _graft(sub_target, sub_skeleton)
        elif skeleton.HasField(field.name) and target.HasField(field.name):
            _graft(getattr(target, field.name), getattr(skeleton, field.name))


def _restore_preserved(model: pb.ModelProto, preserved: bytes, fmt: str) -> None:
    skeleton = pb.ModelProto.FromString(preserved)
    _graft(model, skeleton)
    if fmt == "text" and _has_unknown(model):
        warnings.warn(
            "the graph holds fields from a newer format version, which the text "
            "format cannot store; save it as binary (.pb) to keep them",
            stacklevel=3,
        )


def _has_unknown(msg: _message.Message) -> bool:
    if len(UnknownFieldSet(msg)):
        return True
    for field in _message_fields(msg.DESCRIPTOR):
        if _is_repeated(field):
            if any(_has_unknown(item) for item in getattr(msg, field.name)):
                return True
        elif msg.HasField(field.name) and _has_unknown(getattr(msg, field.name)):
            return True
    return False
