"""Names from the outside (object keys, file names, paths in a transforms file) made safe to show.

A key may hold any character, terminal escape sequences and carriage returns included; printed raw they
rewrite the user's terminal or forge log lines. Everything the worker shows passes through `printable`
(one name) or `printable_text` (a message, newlines kept).
"""

from __future__ import annotations


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(name: str, *, quote: bool = True) -> str:
    """`name` with every non-printable character escaped (\\x1b, \\n, \\u200b); quoted as Python would."""
    if quote:
        return repr(name)
    return "".join(c if c.isprintable() else _escape(c) for c in name)


def printable_text(text: str) -> str:
    """A message with control characters escaped, its line breaks and tabs kept."""
    return "".join(c if c.isprintable() or c in "\n\t" else _escape(c) for c in text)
