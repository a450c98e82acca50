"""ZIP member names that extract safely, as distinct files, on Linux, macOS and Windows.

Every member sits at the archive's top level: the service promises one flat folder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

NAME_MAX = 255
"""Bytes in one file name on Linux and macOS (NAME_MAX); NTFS allows 255 UTF-16 units, fewer."""

# Longer "extensions" are really part of the name ("Notes. A very long sentence"), and
# keeping them whole could leave no room for the stem.
_MAX_EXTENSION = 32
# Replaced by "_" (Windows naming rules): these cannot appear in a name on Windows, and
# "/" and "\" are separators in a ZIP (APPNOTE 4.4.17) and on Windows.
_FORBIDDEN = frozenset('<>:"/\\|?*')
# Cc: controls; Cf: format, which hides bidi overrides that reorder what a user sees (UAX #9);
# Zl/Zp: line breaks.
_REPLACED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Info-ZIP unzip drops a ";" followed only by digits at the end (a VMS version number)
# unless run with -V: "a;1" would extract as "a", on top of a member named "a".
_VMS_VERSION = re.compile(r";(?=[0-9]*\Z)")
# DOS device names, reserved with or without an extension ("nul.tar.gz" is NUL); Windows
# counts the superscript digits ¹²³ as digits too.
_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789¹²³"}
)


def entry_names(names: Sequence[str]) -> list[str | None]:
    """One safe member name per input name, unique within the list; None if a name is unusable.

    Each name, in order:

    1. is split at "/" and "\\", empty, "." and ".." parts dropped and the rest joined with
       "_", so no member can create a folder or climb out of the extraction folder
       (APPNOTE 4.4.17: the file name field holds a relative path with "/" separators);
    2. is normalized to NFC (Unicode TR15), the form keyboards produce; macOS takes the NFC
       and NFD spellings of a name for one file, Linux for two;
    3. has controls, format characters (bidi overrides and isolates, UAX #9), line and
       paragraph separators, lone surrogates, noncharacters and the Windows-forbidden
       ``<>:"|?*`` replaced by "_";
    4. loses trailing dots and spaces, which Windows strips ("Naming Files, Paths, and
       Namespaces"); a name left empty or made of dots and spaces only is None;
    5. gets a "_" in front if Windows reserves it as a device ("CON", "com1.txt", "nul .txt");
    6. is cut to at most NAME_MAX bytes of UTF-8, NFC and NFD alike, on a character
       boundary inside the stem, so the extension survives;
    7. has a ";" before nothing but digits at its end replaced by "_", which Info-ZIP
       unzip would take for a VMS version number and drop;
    8. gets " (2)", " (3)", ... before its extension (again within NAME_MAX) if it equals an
       earlier name after case folding and NFKC, because Windows and macOS compare names
       without case and macOS without normalization.

    None entries do not take a name, so dropping them and asking again gives the same names.
    """
    taken: set[str] = set()
    # The last counter used per colliding name: n equal names cost n look-ups, not n².
    counters: dict[str, int] = {}
    result: list[str | None] = []
    for name in names:
        cleaned = _clean(name)
        if cleaned is None:
            result.append(None)
            continue
        stem, extension = _split(cleaned)
        candidate = _fit(stem, extension)
        base = _key(candidate)
        counter = counters.get(base, 1)
        while _key(candidate) in taken:
            counter += 1
            candidate = _fit(stem, f" ({counter}){extension}")
        counters[base] = counter
        taken.add(_key(candidate))
        result.append(candidate)
    return result


def _clean(name: str) -> str | None:
    """Steps 1 to 5: the name before any cutting, or None if nothing usable is left."""
    # Lone surrogates (from undecodable bytes) cannot be written as UTF-8; replaced first
    # so that normalization and everything after see valid text.
    name = "".join("_" if "\ud800" <= ch <= "\udfff" else ch for ch in name)
    name = unicodedata.normalize("NFC", name)
    parts = name.replace("\\", "/").split("/")
    name = "_".join(part for part in parts if part not in {"", ".", ".."})
    name = "".join("_" if _replaced(ch) else ch for ch in name).rstrip(". ")
    if not name:
        return None
    if name.partition(".")[0].rstrip(" ").upper() in _DEVICES:
        name = f"_{name}"
    return name


def _replaced(ch: str) -> bool:
    code = ord(ch)
    noncharacter = 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE
    return noncharacter or ch in _FORBIDDEN or unicodedata.category(ch) in _REPLACED_CATEGORIES


def _split(name: str) -> tuple[str, str]:
    """The stem and the extension (with its dot); a leading dot starts no extension."""
    dot = name.rfind(".")
    if dot <= 0 or _size(name[dot:]) > _MAX_EXTENSION:
        return name, ""
    return name[:dot], name[dot:]


def _fit(stem: str, tail: str) -> str:
    """`stem + tail`, the stem cut on a character boundary so the whole fits NAME_MAX.

    Steps 6 and 7: the result is the final name, so the cut cannot expose a trailing dot,
    space or version number.
    """
    if _size(stem + tail) > NAME_MAX:
        budget = NAME_MAX - _size(tail)
        # errors="ignore" drops the one character the byte cut may have split.
        stem = unicodedata.normalize("NFC", stem.encode()[:budget].decode(errors="ignore"))
        while _size(stem + tail) > NAME_MAX:
            stem = unicodedata.normalize("NFC", stem[:-1])
    if not tail:
        # The cut may have exposed dots or spaces; the full stem had other characters.
        stem = stem.rstrip(". ") or "_"
    return _VMS_VERSION.sub("_", stem + tail)


def _size(name: str) -> int:
    # HFS+ stores names decomposed (NFD) and counts 255 UTF-16 units, never more than the
    # UTF-8 bytes; so a name that fits in both forms fits everywhere.
    return max(len(name.encode()), len(unicodedata.normalize("NFD", name).encode()))


def _key(name: str) -> str:
    """Equal for names Windows or macOS may treat as one file (a function of casefold∘NFKC)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
