"""Bounds on the work a device's property list can cause, checked before plistlib reads it.

A binary plist refers to its objects by number, and one object may be referred to many times:
plistlib reads each object once, but it hands back a graph in which a small dictionary referred
to twice at each of 40 levels is 2**40 nodes to anyone who walks it as a tree (building the
command.result event, JSON encoding, logging). So the graph is measured as the tree it expands
to (nodes, depth, string and data bytes), each object once (memoised): linear in the body.
An XML plist has no shared references and plistlib refuses entity declarations; only its element
count and depth are bounded, and only when it has enough tags to matter.

Limits, generous for real devices (the largest answers are a busy Mac's ProfileList,
CertificateList or InstalledApplicationList: some thousands to a few tens of thousands of nodes,
at most about ten levels deep, data blobs of a few KiB each):
- MAX_PLIST_NODES: 200,000 nodes (containers, keys and values) in the expanded tree, about five
  times the largest answer above; walking that many nodes in Python takes well under a second.
- MAX_PLIST_DEPTH: 32 levels, three times the deepest Apple message; far below Python's
  recursion limit, which plistlib's binary reader and the event builder recurse against.
- MAX_PLIST_EXPANDED_BYTES: 16 MiB of strings and data in the expanded tree, twice the largest
  body the endpoint accepts (mdm_endpoint.app.MAX_BODY_BYTES), so a binary plist that stores a
  repeated certificate once (as Apple's writer does) still fits.
"""

from __future__ import annotations

import struct
from xml.parsers import expat

MAX_PLIST_NODES = 200_000
MAX_PLIST_DEPTH = 32
MAX_PLIST_EXPANDED_BYTES = 16 << 20

BINARY_MAGIC = b"bplist00"
_TRAILER = struct.Struct(">6xBBQQQ")
_UNSIGNED = {1: "B", 2: "H", 4: "L", 8: "Q"}
_ARRAY, _DICT = 0xA0, 0xD0


class PlistTooComplex(ValueError):
    """The property list would expand past a bound, or its structure cannot be read."""


def check_plist_bounds(body: bytes) -> None:
    """Raise PlistTooComplex unless `body` stays within the bounds above. A body that is not a
    plist at all is left to plistlib to refuse."""
    if body.startswith(BINARY_MAGIC):
        _check_binary(body)
    elif body.count(b"<") > MAX_PLIST_DEPTH:
        # Every element has a '<': with no more of them than MAX_PLIST_DEPTH neither bound can
        # be passed, so the short messages (Idle, Acknowledged) skip the extra pass.
        _check_xml(body)


# --- binary ----------------------------------------------------------------------------------

class _BinaryGraph:
    """The objects of a binary plist by reference number, read the way plistlib reads them."""

    def __init__(self, body: bytes):
        if len(body) < len(BINARY_MAGIC) + _TRAILER.size:
            raise PlistTooComplex("binary plist is truncated")
        offset_size, self.ref_size, count, self.top, table = _TRAILER.unpack_from(
            body, len(body) - _TRAILER.size)
        end = len(body) - _TRAILER.size
        if not (1 <= offset_size <= 8 and 1 <= self.ref_size <= 8):
            raise PlistTooComplex("binary plist trailer has bad integer sizes")
        if not (0 < count <= end and self.top < count
                and len(BINARY_MAGIC) <= table <= end - count * offset_size):
            raise PlistTooComplex("binary plist trailer does not fit the body")
        # Writers store only objects the top object reaches, each at least once in the tree;
        # more objects than nodes allowed cannot make a plist within bounds (and plistlib
        # would allocate for every one of them).
        if count > MAX_PLIST_NODES:
            raise PlistTooComplex(f"property list has more than {MAX_PLIST_NODES} objects")
        self.body = body
        self.offsets = _integers(body, table, count, offset_size)

    def node(self, ref: int) -> tuple[tuple[int, ...], int]:
        """(children, bytes): a container's references (a dictionary's keys, then values), or
        no children and the length of a string or data leaf."""
        if ref >= len(self.offsets):
            raise PlistTooComplex("binary plist refers to an object it does not have")
        body, offset = self.body, self.offsets[ref]
        if offset >= len(body):
            raise PlistTooComplex("binary plist object lies outside the body")
        token = body[offset]
        kind, low = token & 0xF0, token & 0x0F
        if kind not in (_ARRAY, _DICT, 0x40, 0x50, 0x60):
            return (), 0  # fixed-size scalar (or a token plistlib refuses)
        size, start = self._size(offset, low)
        if kind == 0x40:
            return (), size
        if kind in (0x50, 0x60):
            return (), size * (2 if kind == 0x60 else 1)
        refs = size * (2 if kind == _DICT else 1)
        if refs > MAX_PLIST_NODES:
            raise PlistTooComplex(f"property list expands to more than {MAX_PLIST_NODES} nodes")
        if start + refs * self.ref_size > len(body):
            raise PlistTooComplex("binary plist container lies outside the body")
        return _integers(body, start, refs, self.ref_size), 0

    def _size(self, offset: int, low: int) -> tuple[int, int]:
        """A length that follows a marker: in the marker's low nibble, or (0xF) as an integer
        object right after it (plistlib reads 1 << (next byte & 3) bytes, unsigned)."""
        if low != 0xF:
            return low, offset + 1
        body = self.body
        if offset + 2 > len(body):
            raise PlistTooComplex("binary plist length lies outside the body")
        width = 1 << (body[offset + 1] & 0x3)
        start = offset + 2
        if start + width > len(body):
            raise PlistTooComplex("binary plist length lies outside the body")
        size = int.from_bytes(body[start:start + width], "big")
        if size > len(body):
            raise PlistTooComplex("binary plist object is longer than the body")
        return size, start + width


def _integers(body: bytes, start: int, count: int, size: int) -> tuple[int, ...]:
    if size in _UNSIGNED:
        return struct.unpack_from(f">{count}{_UNSIGNED[size]}", body, start)
    return tuple(int.from_bytes(body[i:i + size], "big")
                 for i in range(start, start + count * size, size))


def _check_binary(body: bytes) -> None:
    """Nodes, depth and bytes of the tree the object graph expands to, from the top object,
    each object measured once (depth-first, without recursion); a cycle is refused."""
    graph = _BinaryGraph(body)
    # ref → (nodes, depth, bytes) of the tree below it, once measured.
    measured: dict[int, tuple[int, int, int]] = {}
    children, leaf_bytes = graph.node(graph.top)
    if not children:
        _within(1, 1, leaf_bytes)
        return
    path = [(graph.top, children, 0)]  # the current path: (ref, children, next child)
    on_path = {graph.top}
    # Each reference followed is at least one node of the tree: counting them bounds this
    # check's own work before any subtree is complete.
    followed = 0
    while path:
        ref, children, index = path[-1]
        if index < len(children):
            path[-1] = (ref, children, index + 1)
            followed += 1
            if followed > MAX_PLIST_NODES:
                raise PlistTooComplex(f"property list expands to more than {MAX_PLIST_NODES} "
                                      "nodes")
            child = children[index]
            if child in measured:
                continue
            if child in on_path:
                raise PlistTooComplex("binary plist refers to itself")
            grandchildren, leaf_bytes = graph.node(child)
            if not grandchildren:
                measured[child] = (1, 1, leaf_bytes)
                continue
            if len(path) >= MAX_PLIST_DEPTH:
                raise PlistTooComplex(f"property list is nested deeper than {MAX_PLIST_DEPTH}")
            path.append((child, grandchildren, 0))
            on_path.add(child)
            continue
        path.pop()
        on_path.discard(ref)
        below = [measured[c] for c in children]
        measured[ref] = _within(1 + sum(m[0] for m in below), 1 + max(m[1] for m in below),
                                sum(m[2] for m in below))


def _within(nodes: int, depth: int, size: int) -> tuple[int, int, int]:
    if nodes > MAX_PLIST_NODES:
        raise PlistTooComplex(f"property list expands to more than {MAX_PLIST_NODES} nodes")
    if depth > MAX_PLIST_DEPTH:
        raise PlistTooComplex(f"property list is nested deeper than {MAX_PLIST_DEPTH}")
    if size > MAX_PLIST_EXPANDED_BYTES:
        raise PlistTooComplex(f"property list expands to more than {MAX_PLIST_EXPANDED_BYTES} "
                              "bytes of strings and data")
    return nodes, depth, size


# --- XML -------------------------------------------------------------------------------------

def _check_xml(body: bytes) -> None:
    """Element count and depth, with expat as plistlib uses it. Entity declarations are refused
    here as plistlib refuses them, so no entity is expanded by this pass either."""
    parser = expat.ParserCreate()
    elements = depth = 0

    def start(name, attributes):
        nonlocal elements, depth
        elements += 1
        depth += 1
        # The <plist> element wraps the top object without being a level of it.
        if elements > MAX_PLIST_NODES + 1:
            raise PlistTooComplex(f"property list has more than {MAX_PLIST_NODES} elements")
        if depth > MAX_PLIST_DEPTH + 1:
            raise PlistTooComplex(f"property list is nested deeper than {MAX_PLIST_DEPTH}")

    def end(name):
        nonlocal depth
        depth -= 1

    def entity_declaration(*args):
        raise PlistTooComplex("XML entity declarations are not supported in property lists")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = entity_declaration
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, LookupError):
        # Not well-formed, or an encoding expat does not know (LookupError): plistlib refuses it
        # with its own error.
        return
