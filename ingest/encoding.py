"""Text encoding detection: BOMs, strict UTF-8, then charset-normalizer over a short candidate list.

Detection order (first match wins):
1. a byte-order mark: UTF-32 LE/BE, UTF-8-sig, UTF-16 LE/BE;
2. UTF-16 without a BOM, recognised by its NUL-byte pattern on ASCII-heavy text;
3. strict UTF-8 (pure ASCII included), or UTF-8 with a few bad bytes (a truncated last character, one stray
   Latin-1 byte) when at least 95% of the non-ASCII characters are valid UTF-8: those bytes become U+FFFD
   and a warning is logged;
4. charset-normalizer restricted to `LEGACY_CANDIDATES` (GB18030 first, it is a superset of GBK and
   GB2312; Big5 for traditional Chinese; cp1252 for Western European). Left unrestricted, charset-normalizer
   reads short mixed Chinese/English text as Korean cp949, so the list is deliberately short.

Bytes that still look binary (NUL bytes, control characters, too few printable characters) are rejected
with `InputError(path, "binary file with a text extension")` rather than indexed as garbage.
"""

from __future__ import annotations

import codecs
import logging
import unicodedata
from pathlib import Path

from ragtune.errors import InputError

BINARY_REASON = "binary file with a text extension"
LEGACY_CANDIDATES: tuple[str, ...] = ("gb18030", "big5", "cp1252")
MIN_PRINTABLE_RATIO = 0.95

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
log = logging.getLogger(__name__)


def printable_ratio(text: str) -> float:
    """Share of characters that are not control characters or U+FFFD (a binary-content signal)."""
    if not text:
        return 1.0
    bad = sum(
        1 for ch in text
        if ch == "\ufffd" or (ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in ("Cc", "Cs", "Co"))
    )
    return 1.0 - bad / len(text)


def _check_text(text: str, path: Path) -> None:
    """Reject decoded text that is mostly not text."""
    if printable_ratio(text) < MIN_PRINTABLE_RATIO:
        raise InputError(path, BINARY_REASON)


def _decode_bom(data: bytes, path: Path) -> tuple[str, str] | None:
    """Decode by byte-order mark, or return None when there is none."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(name.removesuffix("-sig"))
            except UnicodeDecodeError as err:
                raise InputError(path, f"invalid {name} text despite its byte-order mark "
                                       f"(byte {err.start + len(bom)})") from None
            return text, name
    return None


def _decode_utf16_nobom(data: bytes) -> tuple[str, str] | None:
    """Recognise BOM-less UTF-16 by NULs sitting on one side of each byte pair."""
    if len(data) < 4 or len(data) % 2:
        return None
    even_nuls = data[0::2].count(0)
    odd_nuls = data[1::2].count(0)
    half = len(data) // 2
    for name, nuls, other in (("utf-16-le", odd_nuls, even_nuls), ("utf-16-be", even_nuls, odd_nuls)):
        if nuls >= 0.1 * half and other * 4 <= nuls:
            try:
                text = data.decode(name)
            except UnicodeDecodeError:
                continue
            if printable_ratio(text) >= MIN_PRINTABLE_RATIO:
                return text, name
    return None


def _decode_mostly_utf8(data: bytes, path: Path) -> tuple[str, str] | None:
    """Accept UTF-8 with a few invalid bytes (U+FFFD in their place) when nearly all of it is valid UTF-8."""
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    valid_non_ascii = sum(1 for ch in text if ord(ch) > 127) - text.count("\ufffd")
    if bad <= 0 or bad * 20 > valid_non_ascii:
        return None
    log.warning("%s: %d invalid UTF-8 byte sequence(s) replaced with U+FFFD", path, bad)
    return text, "utf-8"


def _decode_legacy(data: bytes, path: Path) -> tuple[str, str]:
    """Ask charset-normalizer, restricted to the legacy encodings we expect, for the best reading."""
    from charset_normalizer import from_bytes

    best = from_bytes(data, cp_isolation=list(LEGACY_CANDIDATES)).best()
    if best is None:
        raise InputError(path, "unknown text encoding (not UTF-8/16/32, GB18030/GBK, Big5 or cp1252)",
                         hint="convert the file to UTF-8")
    return str(best), best.encoding


def decode_text(data: bytes, path: Path) -> tuple[str, str]:
    """Decode file bytes to text and name the encoding used; raise InputError for empty or binary data."""
    if not data:
        raise InputError(path, "empty file")
    found = _decode_bom(data, path)
    if found is None and b"\x00" in data:
        found = _decode_utf16_nobom(data)
        if found is None:
            raise InputError(path, BINARY_REASON)
    if found is None:
        try:
            found = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            found = _decode_mostly_utf8(data, path) or _decode_legacy(data, path)
    text, name = found
    _check_text(text, path)
    return text, name
