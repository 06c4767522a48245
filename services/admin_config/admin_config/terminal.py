"""Text that is safe to print on an admin's terminal.

Names and serial numbers the CLI prints come from uploaded profiles and from hosts' check-ins,
which anyone with a device or a profile can fill. Printed raw, an ESC or C1 sequence could move
the cursor, rewrite earlier lines, retitle the window or (on some terminals) answer back; a
carriage return or backspace could overwrite what came before on the line; a bidi override
could make text read differently from what it is. Such characters are shown as visible escapes
(`\\x1b`, `\\u202e`) instead, so an admin sees that they are there.
"""

from __future__ import annotations

import unicodedata

# Cc: C0 controls, DEL, C1 controls. Cf: format characters (bidi embeddings, overrides and
# isolates, zero-width characters). Zl/Zp: line and paragraph separators. Cs: lone surrogates.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object, keep_newlines: bool = False) -> str:
    """`value` as text with every terminal control character escaped; with `keep_newlines`
    line feeds stay (for whole messages the CLI laid out itself)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in UNSAFE_CATEGORIES
                   and not (keep_newlines and ch == "\n") else ch for ch in text)
