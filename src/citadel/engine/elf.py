"""The dynamic section of an ELF64 little-endian shared object: its soname and DT_NEEDED names.

The extension loader needs these to load the libraries an extension depends on from the image
(from memfds) before the extension itself, because the dynamic linker cannot follow ``$ORIGIN``
from a memfd. Only what that needs is parsed: the file header, the program headers (PT_LOAD to map
addresses to file offsets, PT_DYNAMIC to find the dynamic array) and the dynamic string table.
Every offset is bounds-checked; malformed input raises :class:`MalformedElf`, nothing else.
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import mmap
import struct
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

from citadel.errors import ImageError


class Elf64Header(NamedTuple):
    """Elf64_Ehdr (64 bytes)."""

    e_ident: bytes
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int


class Elf64ProgramHeader(NamedTuple):
    """Elf64_Phdr (56 bytes)."""

    p_type: int
    p_flags: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int


ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
ELF64_PHDR = struct.Struct("<IIQQQQQQ")
ELF64_DYN = struct.Struct("<qQ")  # Elf64_Dyn: d_tag (signed), d_val / d_ptr

#: what read_dynamic accepts: anything with len(), slicing and the buffer protocol
Buffer = Union[bytes, bytearray, mmap.mmap]

ELF_MAGIC = b"\x7fELF"
EI_CLASS, ELFCLASS64 = 4, 2
EI_DATA, ELFDATA2LSB = 5, 1
PN_XNUM = 0xFFFF

PT_LOAD = 1
PT_DYNAMIC = 2

DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_STRSZ = 10
DT_SONAME = 14


class MalformedElf(ImageError):
    """A shared library of the image is not an ELF64 little-endian file this loader understands."""

    def __init__(self, what: str, name: str = "") -> None:
        where = f"{name!r} " if name else ""
        super().__init__(f"shared library {where}is not a well-formed ELF64 little-endian file ({what})",
                         "seal a library built for this platform (x86-64/aarch64 Linux)")


class ElfDynamic(NamedTuple):
    """What the dynamic linker will look for: the library's own soname and the names it needs."""

    soname: Optional[str]
    needed: List[str]


def read_dynamic(data: Buffer, name: str = "") -> ElfDynamic:
    """Parse the soname and DT_NEEDED entries of an ELF64 LE shared object (``name`` labels errors).

    A file without a dynamic segment (a static object) has no soname and needs nothing.
    """
    view = data  # read in place (an mmap of a 25 MB library is never copied); no memoryview is kept
    header = Elf64Header(*_unpack(ELF64_EHDR, view, 0, "file header", name))
    if header.e_ident[:4] != ELF_MAGIC:
        raise MalformedElf("bad magic", name)
    if header.e_ident[EI_CLASS] != ELFCLASS64 or header.e_ident[EI_DATA] != ELFDATA2LSB:
        raise MalformedElf("not 64-bit little-endian", name)
    if header.e_phnum == PN_XNUM:
        raise MalformedElf("extended program header count is not supported", name)
    if header.e_phnum and header.e_phentsize < ELF64_PHDR.size:
        raise MalformedElf("program header entries are too small", name)

    loads: List[Tuple[int, int, int]] = []  # (vaddr, filesz, offset)
    dynamic: Optional[Tuple[int, int]] = None  # (offset, filesz)
    for index in range(header.e_phnum):
        phdr = Elf64ProgramHeader(*_unpack(ELF64_PHDR, view, header.e_phoff + index * header.e_phentsize,
                                           "program header", name))
        if phdr.p_type == PT_LOAD:
            loads.append((phdr.p_vaddr, phdr.p_filesz, phdr.p_offset))
        elif phdr.p_type == PT_DYNAMIC and dynamic is None:
            dynamic = (phdr.p_offset, phdr.p_filesz)
    if dynamic is None:
        return ElfDynamic(None, [])

    tags = _dynamic_entries(view, dynamic[0], dynamic[1], name)
    strtab_addr = tags.get(DT_STRTAB, [None])[0]
    if strtab_addr is None:
        if DT_NEEDED in tags or DT_SONAME in tags:
            raise MalformedElf("dynamic names without a string table", name)
        return ElfDynamic(None, [])
    strtab = _file_offset(loads, strtab_addr, name)
    strsz = tags.get(DT_STRSZ, [len(view) - strtab])[0]
    if strtab > len(view) or strtab + strsz > len(view):
        raise MalformedElf("string table runs past the end of the file", name)
    table = bytes(view[strtab : strtab + strsz])
    soname = tags.get(DT_SONAME)
    return ElfDynamic(
        soname=_string(table, soname[0], name) if soname else None,
        needed=[_string(table, off, name) for off in tags.get(DT_NEEDED, [])],
    )


def _unpack(layout: struct.Struct, view: Buffer, offset: int, what: str, name: str) -> tuple:
    if offset < 0 or offset + layout.size > len(view):
        raise MalformedElf(f"{what} is truncated", name)
    return layout.unpack_from(view, offset)


def _dynamic_entries(view: Buffer, offset: int, size: int, name: str) -> Dict[int, List[int]]:
    """tag -> values, in file order, up to DT_NULL (which must come before the segment ends)."""
    if offset + size > len(view):
        raise MalformedElf("dynamic segment runs past the end of the file", name)
    tags: Dict[int, List[int]] = {}
    for pos in range(offset, offset + size - ELF64_DYN.size + 1, ELF64_DYN.size):
        tag, value = ELF64_DYN.unpack_from(view, pos)
        if tag == DT_NULL:
            return tags
        tags.setdefault(tag, []).append(value)
    raise MalformedElf("dynamic segment has no DT_NULL terminator", name)


def _file_offset(loads: List[Tuple[int, int, int]], address: int, name: str) -> int:
    for vaddr, filesz, offset in loads:
        if vaddr <= address < vaddr + filesz:
            return address - vaddr + offset
    raise MalformedElf("string table address is outside every loaded segment", name)


def _string(table: bytes, offset: int, name: str) -> str:
    if offset >= len(table):
        raise MalformedElf("a name points outside the string table", name)
    end = table.find(b"\0", offset)
    if end < 0:
        raise MalformedElf("a name is not NUL-terminated", name)
    raw = table[offset:end]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedElf("a name is not valid UTF-8", name) from None
