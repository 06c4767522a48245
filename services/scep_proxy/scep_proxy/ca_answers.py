"""Reading a CA's answer with a limit on the bytes received, and on what they decompress to.

CA requests ask for `Accept-Encoding: identity`; a CA that compresses anyway is read raw (the
limit counts bytes off the wire), then decoded here with the same limit on the decoded size, a
bounded step at a time: a small gzip bomb costs at most `limit` bytes of memory, never its
inflated size. gzip, x-gzip and deflate are decoded (in the order they were applied); any other
encoding is refused as unreadable. The decoded body is what the host receives (the proxy's
answer carries no Content-Encoding).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import httpx

# At most this much output per decompression step, so no single step can inflate much.
_STEP_BYTES = 64 * 1024


class AnswerTooLarge(Exception):
    """More than the limit was received, or would be once decompressed."""


class UnreadableEncoding(Exception):
    """The answer's Content-Encoding is unknown, or its bytes do not decode."""


def read_raw(response: httpx.Response, limit: int,
             on_chunk: Callable[[], None] | None = None) -> bytes:
    """The body as received (no decompression), refused past `limit` bytes. `on_chunk` runs
    after each chunk (a deadline check)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge()
    chunks, size = [], 0
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge()
        if on_chunk is not None:
            on_chunk()
        chunks.append(chunk)
    return b"".join(chunks)


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    if not body:
        return body
    decompressor = zlib.decompressobj(wbits)
    out, size, pending = [], 0, body
    while True:
        try:
            piece = decompressor.decompress(pending, _STEP_BYTES)
        except zlib.error:
            raise UnreadableEncoding() from None
        size += len(piece)
        if size > limit:
            raise AnswerTooLarge()
        out.append(piece)
        if decompressor.eof:
            break
        pending = decompressor.unconsumed_tail
        if not piece and not pending:
            break
    if not decompressor.eof:
        raise UnreadableEncoding()  # truncated stream
    return b"".join(out)


def _deflate(body: bytes, limit: int) -> bytes:
    # "deflate" is meant to be zlib-wrapped (RFC 9110), but some servers send it raw.
    try:
        return _inflate(body, zlib.MAX_WBITS, limit)
    except UnreadableEncoding:
        return _inflate(body, -zlib.MAX_WBITS, limit)


def decode(body: bytes, content_encoding: str, limit: int) -> bytes:
    """`body` with its Content-Encoding undone, at most `limit` bytes decoded."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif coding == "deflate":
            body = _deflate(body, limit)
        else:
            raise UnreadableEncoding()
    return body


def read_answer(response: httpx.Response, limit: int,
                on_chunk: Callable[[], None] | None = None) -> bytes:
    """The decoded body of a streamed CA answer, both read and decoded size within `limit`."""
    raw = read_raw(response, limit, on_chunk)
    return decode(raw, response.headers.get("content-encoding", ""), limit)
