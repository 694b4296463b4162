"""Jinja2 filters that write Java .properties keys and values safely.

Java reads .properties files (java.util.Properties.load(InputStream), which
bbb-web's bigbluebutton.properties and /etc/bigbluebutton/bbb-web.properties
go through) as ISO-8859-1, and Ansible writes templates as UTF-8. So every
character outside printable ASCII is written as a \\uXXXX escape (characters
beyond the BMP as a UTF-16 surrogate pair, as native2ascii does), which reads
back the same in either encoding.

    {{ key | java_properties_key }}={{ value | java_properties_value }}

Booleans are written as Java writes them (true/false); None as an empty value.
"""

from __future__ import annotations

_SPECIAL = {
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\f": "\\f",
}


def _escape_char(char: str) -> str:
    if char in _SPECIAL:
        return _SPECIAL[char]
    code = ord(char)
    if 0x20 <= code <= 0x7E:
        return char
    if code > 0xFFFF:
        code -= 0x10000
        high, low = 0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)
        return f"\\u{high:04X}\\u{low:04X}"
    return f"\\u{code:04X}"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def java_properties_value(value: object) -> str:
    """Escape a value: it may contain '=', ':', '#' and '!' as they are."""
    text = _text(value)
    escaped = "".join(_escape_char(c) for c in text)
    # Leading blanks would be skipped by the reader; escape them.
    stripped = escaped.lstrip(" ")
    return "\\ " * (len(escaped) - len(stripped)) + stripped


def java_properties_key(value: object) -> str:
    """Escape a key: separators, comment characters and blanks too."""
    out = []
    for char in _text(value):
        if char in "=: #!":
            out.append("\\" + char)
        else:
            out.append(_escape_char(char))
    return "".join(out)


class FilterModule:
    """Java .properties escaping filters."""

    def filters(self):
        return {
            "java_properties_value": java_properties_value,
            "java_properties_key": java_properties_key,
        }
