"""ZIP member names: every name extracts, inside the target folder, as its own file."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.entrynames import NAME_MAX, entry_names

UNZIP = shutil.which("unzip") or "/usr/bin/unzip"
GERMAN_289 = (
    "Übersicht der Überweisungsbestätigungen für Müller & Söhne GmbH – Jahresabschlüsse 2023, "
    "Prüfungsbericht zur Gewinn- und Verlustrechnung, Anhänge und Erläuterungen zur Bilanz für "
    "die Geschäftsführung und den Aufsichtsrat der Gesellschaft (endgültige Fassung, geprüft).xlsx"
)


def write_zip(path: Path, names: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for index, name in enumerate(names):
            archive.writestr(name, f"member {index}")


def extracted(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its path relative to it, with its content."""
    return {
        str(path.relative_to(folder)): path.read_text()
        for path in folder.rglob("*")
        if path.is_file()
    }


def assert_extracts_flat_and_distinct(names: list[str]) -> None:
    """Python's extractall and Info-ZIP unzip both give one top-level file per member."""
    expected = {f"member {index}" for index in range(len(names))}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / "archive.zip"
        write_zip(archive, names)
        by_python, by_unzip = root / "python", root / "unzip"
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(by_python)
        # A UTF-8 locale, as a user's shell has: in "C" unzip escapes non-ASCII names.
        subprocess.run(
            [UNZIP, "-o", "-qq", str(archive), "-d", str(by_unzip)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=os.environ | {"LC_ALL": "C.UTF-8"},
        )
        for folder in (by_python, by_unzip):
            files = extracted(folder)
            assert sorted(files) == sorted(names), folder.name
            assert set(files.values()) == expected, folder.name
            assert all(path.parent == folder for path in folder.iterdir()), folder.name


def assert_safe(names: list[str]) -> None:
    for name in names:
        assert len(name.encode()) <= NAME_MAX, name
        assert len(unicodedata.normalize("NFD", name).encode()) <= NAME_MAX, name
        assert unicodedata.is_normalized("NFC", name), name
        assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for ch in name)
        assert not set(name) & set('<>:"/\\|?*'), name
        assert name[-1] not in ". ", name
    for fold in (
        lambda name: unicodedata.normalize("NFKC", name).casefold(),
        lambda name: unicodedata.normalize("NFD", name).casefold(),
    ):
        assert len({fold(name) for name in names}) == len(names), names


any_char = st.one_of(st.characters(), st.characters(categories=["Cs"]))
# Near-collisions and the reported faults, so lists often hold names that clash.
tricky = st.sampled_from(
    [
        *("CON", "con.txt", ".", "..", " . ", "a/b", "a\\b", "a.txt", "A.TXT", "é", "e\u0301"),
        *("Straße", "STRASSE", "ﬀ", "ff", "x" * 300 + ".pdf", GERMAN_289, "invoice\u202egpj.exe"),
    ]
)
name_strategy = st.one_of(
    tricky,
    st.text(any_char, max_size=12),
    st.text(any_char, min_size=80, max_size=300),
    st.tuples(st.text(any_char, max_size=4), tricky).map("".join),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(name_strategy, max_size=8))
def test_any_names_extract_inside_the_folder_as_distinct_files(raw: list[str]) -> None:
    names = entry_names(raw)
    assert len(names) == len(raw)
    for original, name in zip(raw, names, strict=True):
        # Unusable exactly when nothing but separators, dots and spaces is left.
        assert (name is None) == (set(original) <= set("/\\. "))
    usable = [name for name in names if name is not None]
    assert_safe(usable)
    if usable:
        assert_extracts_flat_and_distinct(usable)


def test_names_over_255_bytes_keep_their_extension() -> None:
    original = "a" * 297 + ".pdf"
    assert len(original.encode()) == 301
    [name] = entry_names([original])
    assert name is not None
    assert name.endswith(".pdf")
    assert len(name.encode()) == NAME_MAX
    assert_extracts_flat_and_distinct([name])


def test_long_german_names_are_cut_between_characters() -> None:
    assert len(GERMAN_289.encode()) == 289
    [name] = entry_names([GERMAN_289])
    assert name is not None
    assert name.endswith(".xlsx")
    assert GERMAN_289.startswith(name.removesuffix(".xlsx"))
    assert len(name.encode()) <= NAME_MAX
    assert_extracts_flat_and_distinct([name])


def test_the_uniqueness_suffix_fits_within_255_bytes() -> None:
    names = entry_names(["x" * 300 + ".pdf"] * 3)
    assert [name[-8:] for name in names if name] == ["xxxx.pdf", " (2).pdf", " (3).pdf"]
    assert all(name and len(name.encode()) <= NAME_MAX for name in names)


def test_decomposed_characters_count_toward_the_limit() -> None:
    # HFS+ stores "ΐ" as three code points: 254 bytes as typed, 762 decomposed.
    [name] = entry_names(["ΐ" * 127])
    assert name is not None
    assert len(unicodedata.normalize("NFD", name).encode()) <= NAME_MAX


def test_names_equal_after_normalization_get_distinct_names() -> None:
    composed, decomposed = "\u00e9t\u00e9.txt", "e\u0301te\u0301.txt"
    assert entry_names([composed, decomposed]) == ["été.txt", "été (2).txt"]


def test_names_equal_after_case_folding_get_distinct_names() -> None:
    names = ["a.txt", "A.txt", "a.txt", "b", "Straße.txt", "STRASSE.TXT", "ﬀ", "ff"]
    assert entry_names(names) == [
        "a.txt",
        "A (2).txt",
        "a (3).txt",
        "b",
        "Straße.txt",
        "STRASSE (2).TXT",
        "ﬀ",
        "ff (2)",
    ]


def test_bidi_overrides_cannot_disguise_the_extension() -> None:
    # Shown as "invoiceexe.jpg", really an .exe (UAX #9 right-to-left override).
    assert entry_names(["invoice\u202egpj.exe"]) == ["invoice_gpj.exe"]


def test_control_format_and_line_characters_are_replaced() -> None:
    names = ["bell\x07.txt", "nul\x00.txt", "a\u2028b\u2029c", "\ufeffbom", "zw\u200bsp"]
    names += ["\ufdd0x", "end\uffff", "del\x7f"]
    assert entry_names(names) == [
        *("bell_.txt", "nul_.txt", "a_b_c", "_bom", "zw_sp"),
        *("_x", "end_", "del_"),
    ]


def test_lone_surrogates_are_replaced() -> None:
    assert entry_names(["bad\udc80name.txt"]) == ["bad_name.txt"]


@pytest.mark.parametrize("name", ["", ".", "..", "...", " ", " . ", "./..", "/", "\\.."])
def test_names_that_cannot_be_a_file_are_unusable(name: str) -> None:
    assert entry_names([name]) == [None]


def test_unusable_names_take_no_name_from_the_others() -> None:
    assert entry_names(["a", ".", "a"]) == ["a", None, "a (2)"]
    assert entry_names(["a", "a"]) == ["a", "a (2)"]


def test_windows_device_names_get_a_prefix() -> None:
    names = ["CON", "con.txt", "nul .txt", "Aux.tar.gz", "LPT¹.log", "COM10", "console.txt"]
    assert entry_names(names) == [
        "_CON",
        "_con.txt",
        "_nul .txt",
        "_Aux.tar.gz",
        "_LPT¹.log",
        "COM10",
        "console.txt",
    ]


def test_trailing_dots_and_spaces_are_dropped() -> None:
    assert entry_names(["name. ", "report.pdf...", "CON. "]) == ["name", "report.pdf", "_CON"]


def test_windows_forbidden_characters_are_replaced() -> None:
    assert entry_names(['a<b>c:d"e|f?g*h.txt']) == ["a_b_c_d_e_f_g_h.txt"]


def test_a_trailing_version_number_survives_unzip() -> None:
    names = entry_names(["report;1", "report", "data;", "a;b", "x" * 300 + ";2.txt"])
    assert names[:4] == ["report_1", "report", "data_", "a;b"]
    assert_extracts_flat_and_distinct([name for name in names if name])


def test_a_cut_never_ends_a_name_in_a_version_number() -> None:
    [name] = entry_names(["x" * 254 + ";123"])
    assert name == "x" * 254 + "_"


def test_separators_never_create_folders_or_escape() -> None:
    names = ["../../etc/passwd", "/abs/path.txt", "..\\win.ini", "a/./b//c", "dir\\sub\\f.txt"]
    assert entry_names(names) == ["etc_passwd", "abs_path.txt", "win.ini", "a_b_c", "dir_sub_f.txt"]
