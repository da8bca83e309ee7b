"""The seccomp program, instruction by instruction (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k)."""

from __future__ import annotations

import struct

import pytest

from citadel.engine.hardening import exec_filter


def test_x86_64_filter_denies_execve_execveat_and_foreign_abis() -> None:
    program = [struct.unpack("HBBI", chunk) for chunk in
               (exec_filter("x86_64")[i:i + 8] for i in range(0, len(exec_filter("x86_64")), 8))]
    deny = 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
    assert program == [
        (0x20, 0, 0, 4),            # A = seccomp_data.arch
        (0x15, 1, 0, 0xC000003E),   # AUDIT_ARCH_X86_64 ? skip the deny
        (0x06, 0, 0, deny),
        (0x20, 0, 0, 0),            # A = seccomp_data.nr
        (0x35, 3, 0, 0x40000000),   # x32 system calls -> deny
        (0x15, 2, 0, 59),           # execve -> deny
        (0x15, 1, 0, 322),          # execveat -> deny
        (0x06, 0, 0, 0x7FFF0000),   # allow
        (0x06, 0, 0, deny),
    ]


def test_jumps_stay_inside_the_program() -> None:
    code = exec_filter("aarch64")
    instructions = [struct.unpack("HBBI", code[i:i + 8]) for i in range(0, len(code), 8)]
    for pc, (op, jt, jf, _k) in enumerate(instructions):
        if op & 0x07 == 0x05:  # BPF_JMP
            assert pc + 1 + max(jt, jf) < len(instructions)
    assert instructions[-1][0] == 0x06 and instructions[-2][0] == 0x06


def test_unknown_machine_has_no_filter() -> None:
    with pytest.raises(KeyError):
        exec_filter("sparc64")
