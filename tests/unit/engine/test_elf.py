"""The ELF dynamic-section reader: real libraries parse; bad bytes raise only MalformedElf."""

from __future__ import annotations

import glob
import os
import struct
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citadel.engine.elf import ELF64_DYN, ELF64_EHDR, ELF64_PHDR, ElfDynamic, MalformedElf, read_dynamic
from citadel.errors import CitadelError

PURELIB = Path(sysconfig.get_paths()["purelib"])
OPENBLAS = sorted(glob.glob(str(PURELIB / "numpy.libs" / "libscipy_openblas*.so")))


def _minimal_library(soname: str, needed: list[str]) -> bytes:
    """A hand-built ELF64 LE object: header, PT_LOAD + PT_DYNAMIC, a dynamic array and its strings."""
    strings = b"\0"
    offsets = []
    for name in [soname, *needed]:
        offsets.append(len(strings))
        strings += name.encode() + b"\0"
    phoff = ELF64_EHDR.size
    dyn_off = phoff + 2 * ELF64_PHDR.size
    entries = [(14, offsets[0])] + [(1, off) for off in offsets[1:]]
    str_off = dyn_off + (len(entries) + 3) * ELF64_DYN.size
    entries += [(5, 0x1000 + str_off), (10, len(strings)), (0, 0)]
    dynamic = b"".join(ELF64_DYN.pack(tag, value) for tag, value in entries)
    total = str_off + len(strings)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ELF64_EHDR.pack(ident, 3, 62, 1, 0, phoff, 0, 0, ELF64_EHDR.size, ELF64_PHDR.size, 2, 0, 0, 0)
    load = ELF64_PHDR.pack(1, 5, 0, 0x1000, 0x1000, total, total, 0x1000)
    dyn = ELF64_PHDR.pack(2, 6, dyn_off, 0x1000 + dyn_off, 0x1000 + dyn_off, len(dynamic), len(dynamic), 8)
    return header + load + dyn + dynamic + strings


def test_hand_built_library_round_trips() -> None:
    data = _minimal_library("libdemo.so.1", ["libc.so.6", "libm.so.6"])
    assert read_dynamic(data) == ElfDynamic("libdemo.so.1", ["libc.so.6", "libm.so.6"])


def test_real_extension_module_and_interpreter() -> None:
    import _ctypes

    ext = read_dynamic(Path(_ctypes.__file__).read_bytes())
    assert ext.soname is None and "libc.so.6" in ext.needed
    exe = read_dynamic(Path(os.path.realpath(sys.executable)).read_bytes())
    assert "libc.so.6" in exe.needed


@pytest.mark.skipif(not OPENBLAS, reason="numpy wheel with bundled OpenBLAS not installed")
def test_bundled_openblas_names_its_soname_and_gfortran() -> None:
    info = read_dynamic(Path(OPENBLAS[0]).read_bytes())
    assert info.soname == os.path.basename(OPENBLAS[0])
    assert any(n.startswith("libgfortran-") for n in info.needed)


def test_static_object_without_dynamic_segment() -> None:
    data = bytearray(_minimal_library("x", []))
    struct.pack_into("<I", data, ELF64_EHDR.size + ELF64_PHDR.size, 4)  # PT_DYNAMIC -> PT_NOTE
    assert read_dynamic(bytes(data)) == ElfDynamic(None, [])


MALFORMED = {
    "not_elf": b"MZ" + bytes(100),
    "elf32": b"\x7fELF\x01\x01\x01" + bytes(100),
    "big_endian": b"\x7fELF\x02\x02\x01" + bytes(100),
    "truncated_header": _minimal_library("a", [])[:40],
    "truncated_program_headers": _minimal_library("a", [])[:100],
    "truncated_dynamic": _minimal_library("a", ["b"])[:200],
    "no_terminator": _minimal_library("a", ["b"]).replace(ELF64_DYN.pack(0, 0), ELF64_DYN.pack(99, 0)),
    "name_outside_strtab": _minimal_library("a", []).replace(ELF64_DYN.pack(14, 1), ELF64_DYN.pack(14, 999)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_inputs_raise_malformed_elf(case: str) -> None:
    with pytest.raises(MalformedElf) as caught:
        read_dynamic(MALFORMED[case], "lib/x.so")
    assert isinstance(caught.value, CitadelError)
    assert "'lib/x.so'" in caught.value.cause and caught.value.remedy


def _only_malformed(data: bytes) -> None:
    try:
        result = read_dynamic(data)
    except MalformedElf:
        return
    assert isinstance(result, ElfDynamic)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_malformed_elf(data: bytes) -> None:
    _only_malformed(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_after_a_valid_ident_raise_only_malformed_elf(tail: bytes) -> None:
    _only_malformed(b"\x7fELF\x02\x01\x01" + bytes(9) + tail)


LIBRARY = _minimal_library("libdemo.so.1", ["libc.so.6"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(LIBRARY)))
def test_every_truncation_raises_only_malformed_elf(cut: int) -> None:
    _only_malformed(LIBRARY[:cut])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(LIBRARY) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutations_raise_only_malformed_elf(edits: list[tuple[int, int]]) -> None:
    data = bytearray(LIBRARY)
    for offset, value in edits:
        data[offset] = value
    _only_malformed(bytes(data))
