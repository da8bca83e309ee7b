"""Every error path a user can hit from the command line, as a user hits it (the real console script).

The requirement: each prints one line of cause (`citadel: error: ...`) and one of remedy
(`citadel: hint: ...`), exits non-zero, never shows a traceback, and leaves nothing half-written.
argparse's own usage errors (exit 2, with its usage line) are accepted for malformed flags, and
`--help` exits 0. The table is the audit: each case id names the defect it would catch, and cases
that write check their target afterwards. Placeholders in argv: {w} the workspace, {img}/{key} a
sealed image and its key, {V} the shared evidence vectors, {cas}/{fp} a running CAS and its
fingerprint, {kds} a local stand-in for AMD's KDS.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

from tests.conftest import citadel_cmd, clean_env
from tests.integration.cas.policies import policy
from tests.integration.cas.server import CasServer

Check = Callable[[Path], None]


@dataclass
class Case:
    id: str
    argv: Sequence[str]
    kind: str = "error"  # error: the two-line shape; usage: argparse's; help: exit 0; issues: policy errors
    words: Sequence[str] = ()  # key words of the cause (case-insensitive)
    env: Dict[str, str] = field(default_factory=dict)
    rc: Optional[int] = None  # exact exit status, where it is part of the contract
    after: Optional[Check] = None  # nothing half-written: inspect the workspace afterwards
    stdin: Optional[str] = None
    marks: Sequence[pytest.MarkDecorator] = ()


def param(case: Case) -> pytest.param:  # type: ignore[valid-type]
    return pytest.param(case, id=case.id, marks=list(case.marks))


def absent(*names: str) -> Check:
    def check(w: Path) -> None:
        for name in names:
            assert not os.path.lexists(w / name), f"{name} was left behind"
        leftovers = [p.name for p in w.iterdir() if p.name.startswith(".citadel-export-") or ".sealing-" in p.name]
        assert not leftovers, f"staging left behind: {leftovers}"

    return check


def same_bytes(name: str, original: str) -> Check:
    def check(w: Path) -> None:
        assert (w / name).read_bytes() == (w / original).read_bytes(), f"{name} was changed"

    return check


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


# --- the table ----------------------------------------------------------------------------------
TOP = [
    Case("no-args-prints-usage", [], kind="usage-stdout", rc=2),
    Case("unknown-command", ["frobnicate"], kind="usage", words=["invalid choice"]),
    Case("unknown-flag", ["--frobnicate"], kind="usage"),
]

SEAL = [
    Case("seal-missing-src", ["seal", "{w}/nope", "-o", "{w}/s1.img"], words=["does not exist"], rc=2,
         after=absent("s1.img")),
    Case("seal-src-is-a-file", ["seal", "{w}/afile", "-o", "{w}/s2.img"], words=["not a directory"],
         after=absent("s2.img")),
    Case("seal-no-output-flag", ["seal", "{w}/app"], kind="usage", words=["-o/--output"]),
    Case("seal-output-exists", ["seal", "{w}/app", "-o", "{img}"], words=["already exists", "IMAGE"]),
    Case("seal-output-is-a-file", ["seal", "{w}/app", "-o", "{w}/afile"], words=["not a directory"]),
    Case("seal-output-parent-missing", ["seal", "{w}/app", "-o", "{w}/nodir/sub/s3.img"], words=["does not exist"],
         after=absent("nodir")),
    Case("seal-output-parent-is-a-file", ["seal", "{w}/app", "-o", "{w}/afile/s4.img"], words=["is a file"]),
    Case("seal-output-unwritable", ["seal", "{w}/app", "-o", "/proc/citadel-s5.img"], words=["cannot create"]),
    Case("seal-output-inside-src", ["seal", "{w}/app", "-o", "{w}/app/inner.img"], words=["inside SRC"],
         after=absent("app/inner.img")),
    Case("seal-key-out-exists", ["seal", "{w}/app", "-o", "{w}/s6.img", "--key-out", "{key}"],
         words=["already exists"], after=absent("s6.img")),
    Case("seal-key-out-is-a-directory", ["seal", "{w}/app", "-o", "{w}/s7.img", "--key-out", "{w}/adir"],
         words=["is a directory"], after=absent("s7.img")),
    Case("seal-key-out-parent-is-a-file", ["seal", "{w}/app", "-o", "{w}/s8.img", "--key-out", "{w}/afile/k"],
         words=["is a file"], after=absent("s8.img")),
    Case("seal-key-out-unwritable", ["seal", "{w}/app", "-o", "{w}/s9.img", "--key-out", "/proc/citadel.key"],
         words=["cannot write the key file"], after=absent("s9.img")),
    Case("seal-key-out-inside-image", ["seal", "{w}/app", "-o", "{w}/s10.img", "--key-out", "{w}/s10.img"],
         words=["inside IMAGE"], after=absent("s10.img")),
    Case("seal-key-file-missing", ["seal", "{w}/app", "-o", "{w}/s11.img", "--key-file", "{w}/nope.key"],
         words=["does not exist"], after=absent("s11.img")),
    Case("seal-key-file-garbage", ["seal", "{w}/app", "-o", "{w}/s12.img", "--key-file", "{w}/garbage.key"],
         words=["64 hex digits"], after=absent("s12.img")),
    Case("seal-key-file-empty", ["seal", "{w}/app", "-o", "{w}/s13.img", "--key-file", "{w}/empty.key"],
         words=["64 hex digits"], after=absent("s13.img")),
    Case("seal-key-file-is-a-directory", ["seal", "{w}/app", "-o", "{w}/s14.img", "--key-file", "{w}/adir"],
         words=["is a directory"], after=absent("s14.img")),
    Case("seal-venv-missing", ["seal", "{w}/app", "-o", "{w}/s15.img", "--venv", "{w}/nope"],
         words=["--venv", "does not exist"], after=absent("s15.img")),
    Case("seal-venv-without-site-packages", ["seal", "{w}/app", "-o", "{w}/s16.img", "--venv", "{w}/adir"],
         words=["site-packages"], after=absent("s16.img")),
    Case("seal-python-path-missing", ["seal", "{w}/app", "-o", "{w}/s17.img", "--python-path", "{w}/nope"],
         words=["python path", "does not exist"], after=absent("s17.img")),
    Case("seal-python-path-is-a-file", ["seal", "{w}/app", "-o", "{w}/s18.img", "--python-path", "{w}/afile"],
         words=["not a directory"], after=absent("s18.img")),
    Case("seal-fifo-in-tree", ["seal", "{w}/withfifo", "-o", "{w}/s19.img"], words=["FIFO"], after=absent("s19.img")),
    Case("seal-symlink-leaves-tree", ["seal", "{w}/escaping", "-o", "{w}/s20.img"], words=["symlink", "outside"],
         after=absent("s20.img")),
    Case("seal-symlink-loop", ["seal", "{w}/looping", "-o", "{w}/s21.img"], words=["symlink", "loops"],
         after=absent("s21.img")),
    Case("seal-name-not-utf8", ["seal", "{w}/badname", "-o", "{w}/s22.img"], words=["UTF-8"],
         after=absent("s22.img")),
]

_RUN = ["run", "--image", "{img}", "--key-file", "{key}"]
RUN = [
    Case("run-heap-not-a-size", _RUN + ["app.py"], env={"CITADEL_HEAP": "12X"}, words=["CITADEL_HEAP", "not a size"]),
    Case("run-heap-flag-not-a-size", _RUN + ["--heap", "12X", "app.py"], words=["CITADEL_HEAP", "not a size"]),
    Case("run-heap-too-small", _RUN + ["app.py"], env={"CITADEL_HEAP": "1K"}, words=["too small"]),
    Case("run-heap-overflows-the-c-long", _RUN + ["app.py"], env={"CITADEL_HEAP": "99999999999G"},
         words=["CITADEL_HEAP", "larger than any machine"]),
    Case("run-mode-banana", _RUN + ["app.py"], env={"CITADEL_MODE": "banana"}, words=["CITADEL_MODE", "not a mode"]),
    Case("run-mode-flag-banana", _RUN + ["--mode", "banana", "app.py"], words=["CITADEL_MODE", "not a mode"]),
    Case("run-stack-negative", _RUN + ["app.py"], env={"CITADEL_STACK": "-1"}, words=["CITADEL_STACK"]),
    Case("run-stack-too-small", _RUN + ["app.py"], env={"CITADEL_STACK": "1"}, words=["CITADEL_STACK", "outside"]),
    Case("run-log-loud", _RUN + ["app.py"], env={"CITADEL_LOG": "loud"}, words=["CITADEL_LOG", "log level"]),
    Case("run-log-flag-loud", _RUN + ["--log", "loud", "app.py"], words=["CITADEL_LOG", "log level"]),
    Case("run-allow-dlopen-maybe", _RUN + ["app.py"], env={"CITADEL_ALLOW_DLOPEN": "maybe"},
         words=["CITADEL_ALLOW_DLOPEN", "yes/no"]),
    Case("run-hash-2", _RUN + ["app.py"], env={"CITADEL_HASH": "2"}, words=["CITADEL_HASH"]),
    Case("run-config-id-without-service", _RUN + ["app.py"], env={"CITADEL_CONFIG_ID": "x"},
         words=["CITADEL_CONFIG_ID"]),
    Case("run-wrong-key", ["run", "--image", "{img}", "--key-file", "{w}/wrong.key", "app.py"],
         words=["key does not open"]),
    Case("run-key-file-missing", ["run", "--image", "{img}", "--key-file", "{w}/nope.key", "app.py"],
         words=["cannot read the key file"], rc=2),
    Case("run-key-file-garbage", ["run", "--image", "{img}", "--key-file", "{w}/garbage.key", "app.py"],
         words=["64 hex digits"]),
    Case("run-key-file-empty", ["run", "--image", "{img}", "--key-file", "{w}/empty.key", "app.py"],
         words=["64 hex digits"]),
    Case("run-key-file-is-a-directory", ["run", "--image", "{img}", "--key-file", "{w}/adir", "app.py"],
         words=["is a directory"]),
    Case("run-image-missing", ["run", "--image", "{w}/nope.img", "--key-file", "{key}", "app.py"],
         words=["does not exist"], rc=2),
    Case("run-image-is-a-file", ["run", "--image", "{w}/afile", "--key-file", "{key}", "app.py"],
         words=["not a directory"], rc=2),
    Case("run-image-is-not-sealed", ["run", "--image", "{w}/adir", "--key-file", "{key}", "app.py"],
         words=["not a sealed image"]),
    Case("run-image-without-key", ["run", "--image", "{img}", "app.py"], words=["--key-file"], rc=2),
    Case("run-without-image", ["run", "app.py"], words=["--image is required"], rc=2),
    Case("run-nothing-to-run", _RUN, words=["nothing to run"], rc=2),
    Case("run-tampered-file", ["run", "--image", "{w}/tampered.img", "--key-file", "{key}", "app.py"],
         words=["app.py", "changed after sealing"]),
    Case("run-manifest-missing", ["run", "--image", "{w}/nomanifest.img", "--key-file", "{key}", "app.py"],
         words=["not a sealed image"]),
    Case("run-manifest-truncated", ["run", "--image", "{w}/truncated.img", "--key-file", "{key}", "app.py"],
         words=["truncated"]),
    Case("run-sealed-file-deleted", ["run", "--image", "{w}/deleted.img", "--key-file", "{key}", "app.py"],
         words=["helper.py", "missing"]),
    Case("run-script-missing", _RUN + ["nope.py"], words=["nope.py", "not a sealed file"]),
    Case("run-script-is-a-directory", _RUN + ["pkg"], words=["pkg", "is a directory"]),
    Case("run-script-outside-the-image", _RUN + ["../../etc/passwd"], words=["not a sealed file"]),
    Case("run-script-absolute-host-path", _RUN + ["/etc/passwd"], words=["not a sealed file"]),
    Case("run-module-missing", _RUN + ["-m", "nope.mod"], words=["nope.mod", "no sealed or standard module"]),
    Case("run-module-package-without-main", _RUN + ["-m", "pkg"], words=["pkg", "without a __main__"]),
    Case("run-tag-not-hex", _RUN + ["--tag", "zz", "app.py"], words=["tag", "64 hex digits"]),
    Case("run-tag-wrong", _RUN + ["--tag", "ab" * 32, "app.py"], words=["tag"]),
    Case("run-cwd-missing", _RUN + ["--cwd", "{w}/nope", "app.py"], words=["--cwd", "not a directory"], rc=2),
    Case("run-unknown-flag-after-image", _RUN + ["-c", "1"], kind="usage", words=["unrecognized arguments"]),
    Case("run-volume-without-equals", _RUN + ["--volume", "foo", "app.py"], words=["NAME=HOST_DIR:MOUNT"], rc=2),
    Case("run-volume-without-mount", _RUN + ["--volume", "out={w}/v", "app.py"], words=["absolute mount path"],
         rc=2),
    Case("run-volume-relative-mount", _RUN + ["--volume", "out={w}/v:data", "app.py"],
         words=["absolute mount path"], rc=2),
    Case("run-volume-unknown-option", _RUN + ["--volume", "out={w}/v:/data:rw", "app.py"],
         words=["unknown option 'rw'"], rc=2),
    Case("run-volume-without-key", _RUN + ["--volume", "out={w}/v:/data", "app.py"], words=["has no key"], rc=2),
    Case("run-volume-key-missing", _RUN + ["--volume", "out={w}/v:/data", "--volume-key", "out={w}/nope.key",
                                           "app.py"], words=["cannot read the key file"], rc=2),
    Case("run-volume-key-garbage", _RUN + ["--volume", "out={w}/v:/data", "--volume-key", "out={w}/garbage.key",
                                           "app.py"], words=["64 hex digits"], rc=2),
    Case("run-volume-key-not-name-equals-file", _RUN + ["--volume", "out={w}/v:/data", "--volume-key",
                                                        "{w}/vol.key", "app.py"], words=["NAME=FILE"], rc=2),
    Case("run-volume-key-unknown-name", _RUN + ["--volume-key", "zz={w}/vol.key", "app.py"], words=["zz"], rc=2),
    Case("run-volume-named-twice", _RUN + ["--volume", "a={w}/v:/d", "--volume", "a={w}/u:/e", "app.py"],
         words=["twice"], rc=2),
    Case("run-volume-create-unknown-name", _RUN + ["--volume-create", "zz", "app.py"], words=["zz"], rc=2),
    Case("run-volume-without-tag-store", _RUN + ["--volume", "out={w}/v:/data", "--volume-key", "out={w}/vol.key",
                                                 "app.py"], words=["--tag-store"], rc=2),
    Case("run-volume-directory-missing", _RUN + ["--volume", "out={w}/novol:/data:ephemeral", "--volume-key",
                                                 "out={w}/vol.key", "app.py"], words=["not a Citadel volume"],
         after=absent("novol")),
    Case("run-volume-tag-store-garbage", _RUN + ["--volume", "vol={w}/vol:/data", "--volume-key", "vol={w}/vol.key",
                                                 "--tag-store", "{w}/garbage.key", "app.py"], words=["not valid JSON"]),
    Case("run-volume-mounted-at-root", _RUN + ["--volume", "out={w}/v2:/:ephemeral", "--volume-key", "out={w}/vol.key",
                                               "--volume-create", "out", "app.py"], words=["mounted at '/'"],
         after=absent("v2")),
    Case("run-volume-create-read-only-writes-no-key", _RUN + ["--volume", "out={w}/v3:/data:ro", "--volume-key",
                                                              "out={w}/new-ro.key", "--volume-create", "out",
                                                              "app.py"], words=["read-only"], rc=2,
         after=absent("new-ro.key", "v3")),
]

PYTHON_MEASURE = [
    Case("python-heap-not-a-size", ["python"], env={"CITADEL_HEAP": "12X"}, words=["CITADEL_HEAP"], stdin=""),
    Case("python-image-without-key", ["python", "--image", "{img}"], words=["--key-file"], rc=2, stdin=""),
    Case("python-wrong-key", ["python", "--image", "{img}", "--key-file", "{w}/wrong.key"],
         words=["key does not open"], stdin=""),
    Case("python-extra-argument", ["python", "app.py"], kind="usage", words=["unrecognized arguments"], stdin=""),
    Case("measure-heap-not-a-size", ["measure"], env={"CITADEL_HEAP": "12X"}, words=["CITADEL_HEAP"]),
    Case("measure-mode-banana", ["measure", "--mode", "banana"], words=["CITADEL_MODE"]),
    Case("measure-allow-dlopen-maybe", ["measure"], env={"CITADEL_ALLOW_DLOPEN": "maybe"},
         words=["CITADEL_ALLOW_DLOPEN"]),
    Case("measure-log-loud", ["measure"], env={"CITADEL_LOG": "loud"}, words=["CITADEL_LOG"]),
    Case("measure-stack-negative", ["measure"], env={"CITADEL_STACK": "-1"}, words=["CITADEL_STACK"]),
    Case("measure-cas-without-pin", ["measure", "--cas", "https://127.0.0.1:1"], words=["no fingerprint"]),
    Case("measure-cas-fingerprint-garbage", ["measure", "--cas", "https://127.0.0.1:1", "--cas-fingerprint", "zz"],
         words=["fingerprint"]),
    Case("measure-cache-dir-unwritable", ["measure"], env={"CITADEL_CACHE_DIR": "/proc/citadel-cache"},
         words=["engine manifest"]),
]

_SGX = "{V}/sgx/prod_quote_v3.bin"
EVIDENCE = [
    Case("evidence-without-action", ["evidence"], words=["missing action"], rc=2),
    Case("evidence-file-missing", ["evidence", "verify", "{w}/nope.bin", "--kind", "sgx"],
         words=["cannot read evidence"], rc=2),
    Case("evidence-file-is-a-directory", ["evidence", "verify", "{w}/adir", "--kind", "sgx"],
         words=["is a directory"], rc=2),
    Case("evidence-empty-sgx", ["evidence", "verify", "{w}/empty.key", "--kind", "sgx"], words=["quote.truncated"],
         rc=1),
    Case("evidence-empty-snp", ["evidence", "verify", "{w}/empty.key", "--kind", "snp"], words=["snp.parse"], rc=1),
    Case("evidence-empty-tpm", ["evidence", "verify", "{w}/empty.key", "--kind", "tpm"], words=["tpm.container"],
         rc=1),
    Case("evidence-wrong-kind-choice", ["evidence", "verify", "{w}/empty.key", "--kind", "nitro"], kind="usage",
         words=["invalid choice"]),
    Case("evidence-kind-missing", ["evidence", "verify", "{w}/empty.key"], kind="usage", words=["--kind"]),
    Case("evidence-sgx-quote-as-tdx", ["evidence", "verify", _SGX, "--kind", "tdx"],
         words=["an SGX quote, not TDX"], rc=1),
    Case("evidence-snp-report-as-sgx", ["evidence", "verify", "{V}/snp/milan_report_v2.bin", "--kind", "sgx"],
         words=["quote"], rc=1),
    Case("evidence-at-garbage", ["evidence", "verify", _SGX, "--kind", "sgx", "--at", "yesterday"],
         words=["ISO 8601"], rc=2),
    Case("evidence-at-before-year-one-in-utc", ["evidence", "verify", _SGX, "--kind", "sgx", "--at",
                                                "0001-01-01T00:00:00+01:00"], words=["--at", "outside"], rc=2),
    Case("evidence-at-after-9999-in-utc", ["evidence", "verify", _SGX, "--kind", "sgx", "--at",
                                           "9999-12-31T23:59:59-05:00"], words=["--at", "outside"], rc=2),
    Case("evidence-report-data-not-hex", ["evidence", "verify", _SGX, "--kind", "sgx", "--report-data", "zz"],
         words=["--report-data", "hex"], rc=2),
    Case("evidence-collateral-missing", ["evidence", "verify", _SGX, "--kind", "sgx", "--collateral", "{w}/nope"],
         words=["collateral", "does not exist"], rc=2),
    Case("evidence-collateral-empty-file", ["evidence", "verify", _SGX, "--kind", "sgx", "--collateral",
                                            "{w}/empty.key", "--at", "2025-06-01"], words=["collateral.format"], rc=1),
    Case("evidence-collateral-json-array", ["evidence", "verify", _SGX, "--kind", "sgx", "--collateral",
                                            "{w}/array.json", "--at", "2025-06-01"], words=["JSON object"], rc=1),
    Case("evidence-collateral-empty-directory", ["evidence", "verify", _SGX, "--kind", "sgx", "--collateral",
                                                 "{w}/adir", "--at", "2025-06-01"], words=["collateral.missing"],
         rc=1),
    Case("evidence-collateral-for-tpm", ["evidence", "verify", "{w}/empty.key", "--kind", "tpm", "--collateral",
                                         "{w}/adir"], words=["takes no collateral"], rc=2),
    Case("evidence-snp-vcek-garbage", ["evidence", "verify", "{V}/snp/milan_report_v2.bin", "--kind", "snp",
                                       "--collateral", "{w}/garbage.key"], words=["snp.collateral"], rc=1),
    Case("evidence-intel-root-missing", ["evidence", "verify", _SGX, "--kind", "sgx", "--intel-root", "{w}/nope"],
         words=["cannot read the Intel root"], rc=2),
    Case("evidence-intel-root-garbage", ["evidence", "verify", _SGX, "--kind", "sgx", "--intel-root",
                                         "{w}/garbage.key"], words=["trust anchor", "trust.root"], rc=2),
    Case("evidence-amd-chain-garbage", ["evidence", "verify", "{V}/snp/milan_report_v2.bin", "--kind", "snp",
                                        "--amd-chain", "{w}/garbage.key"], words=["trust anchor", "snp.chain"], rc=2),
    Case("evidence-amd-chain-missing", ["evidence", "verify", "{V}/snp/milan_report_v2.bin", "--kind", "snp",
                                        "--amd-chain", "{w}/nope"], words=["cannot read AMD chain"], rc=2),
    Case("evidence-tpm-ak-garbage", ["evidence", "verify", "{V}/tpm/tpm_evidence.json", "--kind", "tpm", "--ak",
                                     "{w}/garbage.key"], words=["trust anchor", "attestation key"], rc=2),
    Case("evidence-tpm-ak-missing", ["evidence", "verify", "{V}/tpm/tpm_evidence.json", "--kind", "tpm", "--ak",
                                     "{w}/nope"], words=["cannot read attestation key"], rc=2),
    Case("evidence-tpm-not-a-container", ["evidence", "verify", "{V}/tpm/tpm_evidence.json", "--kind", "tpm"],
         words=["tpm.container"], rc=1),
    Case("pack-tpm-without-inputs", ["evidence", "pack-tpm", "-o", "{w}/p1.tpm"], words=["--attest"], rc=2,
         after=absent("p1.tpm")),
    Case("pack-tpm-inputs-missing", ["evidence", "pack-tpm", "--attest", "{w}/nope", "--signature", "{w}/nope",
                                     "--pcrs", "{w}/nope", "-o", "{w}/p2.tpm"], words=["cannot read attest"], rc=2,
         after=absent("p2.tpm")),
    Case("pack-tpm-inputs-garbage", ["evidence", "pack-tpm", "--attest", "{w}/garbage.key", "--signature",
                                     "{w}/garbage.key", "--pcrs", "{w}/garbage.key", "-o", "{w}/p3.tpm"],
         words=["cannot pack"], rc=2, after=absent("p3.tpm")),
    Case("pack-tpm-ak-garbage-is-refused-at-pack-time", [
        "evidence", "pack-tpm", "--attest", "{V}/tpm/swtpm_quote.attest", "--signature", "{V}/tpm/swtpm_quote.sig",
        "--pcrs", "{V}/tpm/swtpm_quote.pcrs", "--ak", "{w}/garbage.key", "-o", "{w}/p4.tpm"],
        words=["attestation key"], rc=2, after=absent("p4.tpm")),
    Case("pack-tpm-attest-and-signature-swapped", [
        "evidence", "pack-tpm", "--attest", "{V}/tpm/swtpm_quote.sig", "--signature", "{V}/tpm/swtpm_quote.attest",
        "--pcrs", "{V}/tpm/swtpm_quote.pcrs", "-o", "{w}/p5.tpm"], words=["tpm.parse"], rc=2, after=absent("p5.tpm")),
    Case("pack-tpm-output-overwrites-its-input", [
        "evidence", "pack-tpm", "--attest", "{w}/attest.bin", "--signature", "{V}/tpm/swtpm_quote.sig",
        "--pcrs", "{V}/tpm/swtpm_quote.pcrs", "-o", "{w}/attest.bin"], words=["input"], rc=2,
        after=same_bytes("attest.bin", "attest.orig")),
    Case("pack-tpm-trustee-garbage", ["evidence", "pack-tpm", "--trustee", "{w}/garbage.key", "-o", "{w}/p6.tpm"],
         words=["trustee"], rc=2, after=absent("p6.tpm")),
    Case("pack-tpm-output-is-a-directory", ["evidence", "pack-tpm", "--trustee", "{V}/tpm/tpm_evidence.json", "-o",
                                            "{w}/adir"], words=["is a directory"], rc=2),
    Case("pack-tpm-output-unwritable", ["evidence", "pack-tpm", "--trustee", "{V}/tpm/tpm_evidence.json", "-o",
                                        "/proc/citadel.tpm"], words=["cannot write"], rc=2),
]

_SNP_FETCH = ["collateral", "fetch", "--kind", "snp", "{V}/snp/milan_report_v2.bin", "--product", "Milan"]
COLLATERAL = [
    Case("collateral-without-action", ["collateral"], words=["missing action"], rc=2),
    Case("collateral-fetch-kind-missing", ["collateral", "fetch", "--cache", "{w}/c1"], kind="usage",
         words=["--kind"]),
    Case("collateral-fetch-snp-without-report", ["collateral", "fetch", "--kind", "snp", "--cache", "{w}/c2"],
         words=["needs the report"], rc=2, after=absent("c2")),
    Case("collateral-fetch-report-missing", ["collateral", "fetch", "--kind", "snp", "{w}/nope", "--cache", "{w}/c3"],
         words=["cannot read"], rc=2, after=absent("c3")),
    Case("collateral-fetch-report-garbage", ["collateral", "fetch", "--kind", "snp", "{w}/garbage.key", "--cache",
                                             "{w}/c4"], words=["snp.parse"], after=absent("c4")),
    Case("collateral-fetch-v2-report-without-product", ["collateral", "fetch", "--kind", "snp",
                                                        "{V}/snp/milan_report_v2.bin", "--cache", "{w}/c5"],
         words=["does not name its CPU"], after=absent("c5")),
    Case("collateral-fetch-intel-without-quote", ["collateral", "fetch", "--kind", "sgx", "--cache", "{w}/c6"],
         words=["--fmspc"], rc=2, after=absent("c6")),
    Case("collateral-fetch-sgx-quote-as-tdx", ["collateral", "fetch", "--kind", "tdx", _SGX, "--cache", "{w}/c7"],
         words=["SGX quote, not TDX"], rc=2, after=absent("c7")),
    Case("collateral-fetch-fmspc-garbage", ["collateral", "fetch", "--kind", "sgx", "--fmspc", "zz", "--ca",
                                            "processor", "--cache", "{w}/c8"], words=["FMSPC"], after=absent("c8")),
    Case("collateral-fetch-url-not-http", _SNP_FETCH + ["--cache", "{w}/c9", "--kds-url", "notaurl"],
         words=["--kds-url", "http(s)"], rc=2, after=absent("c9")),
    Case("collateral-fetch-url-file-scheme", ["collateral", "fetch", "--kind", "sgx", _SGX, "--cache", "{w}/c10",
                                              "--pcs-url", "file:///etc/"], words=["--pcs-url"], rc=2,
         after=absent("c10")),
    Case("collateral-fetch-unreachable-port", _SNP_FETCH + ["--cache", "{w}/c11", "--kds-url", "http://127.0.0.1:1"],
         words=["cannot reach"], after=absent("c11")),
    Case("collateral-fetch-answers-garbage", _SNP_FETCH + ["--cache", "{w}/c12", "--kds-url", "{kds}/garbage"],
         words=["ASK and an ARK"], after=absent("c12")),
    Case("collateral-fetch-answers-404", _SNP_FETCH + ["--cache", "{w}/c13", "--kds-url", "{kds}/missing"],
         words=["HTTP 404"], after=absent("c13")),
    Case("collateral-fetch-timeout-negative", _SNP_FETCH + ["--cache", "{w}/c14", "--timeout", "-1"],
         words=["--timeout"], rc=2, after=absent("c14")),
    Case("collateral-fetch-timeout-nan", _SNP_FETCH + ["--cache", "{w}/c15", "--timeout", "nan"],
         words=["--timeout"], rc=2, after=absent("c15")),
    Case("collateral-fetch-timeout-not-a-number", _SNP_FETCH + ["--cache", "{w}/c16", "--timeout", "x"],
         kind="usage", words=["--timeout"]),
    Case("collateral-fetch-cache-is-a-file", _SNP_FETCH + ["--cache", "{w}/afile", "--kds-url", "{kds}/ok"],
         words=["--cache", "is a file"], rc=2),
    Case("collateral-fetch-cache-unwritable", _SNP_FETCH + ["--cache", "/proc/citadel-cache", "--kds-url",
                                                            "{kds}/ok"], words=["cannot write"]),
    Case("collateral-list-missing", ["collateral", "list", "{w}/nope"], words=["not a directory"], rc=2),
]

_VK = ["--key-file", "{w}/vol.key"]
VOLUME = [
    Case("volume-without-action", ["volume"], kind="usage", words=["ACTION"]),
    Case("volume-create-without-key", ["volume", "create", "{w}/v10"], words=["key"], rc=2, after=absent("v10")),
    Case("volume-create-key-garbage", ["volume", "create", "{w}/v11", "--key-file", "{w}/garbage.key"],
         words=["64 hex digits"], after=absent("v11")),
    Case("volume-create-key-is-a-directory", ["volume", "create", "{w}/v12", "--key-file", "{w}/adir"],
         words=["is a directory"], rc=2, after=absent("v12")),
    Case("volume-create-key-unwritable", ["volume", "create", "{w}/v13", "--key-file", "/proc/citadel.key"],
         words=["cannot write the key file"], rc=2, after=absent("v13")),
    Case("volume-create-directory-not-empty", ["volume", "create", "{w}/nonempty", "--key-file", "{w}/new1.key"],
         words=["not empty"], after=absent("new1.key")),
    Case("volume-create-on-a-file", ["volume", "create", "{w}/afile", "--key-file", "{w}/new2.key"],
         words=["is a file"], after=absent("new2.key")),
    Case("volume-create-unwritable", ["volume", "create", "/proc/citadel-vol", "--key-file", "{w}/new3.key"],
         words=["cannot create a volume"], after=absent("new3.key")),
    Case("volume-create-chunk-size-zero", ["volume", "create", "{w}/v14", "--key-file", "{w}/new4.key",
                                           "--chunk-size", "0"], words=["--chunk-size"], rc=2,
         after=absent("v14", "new4.key")),
    Case("volume-create-tag-store-is-a-directory", ["volume", "create", "{w}/v15", "--key-file", "{w}/new5.key",
                                                    "--tag-store", "{w}/adir"], words=["tag store", "directory"],
         after=absent("v15", "new5.key", "adir.lock")),
    Case("volume-create-tag-store-unwritable", ["volume", "create", "{w}/v16", "--key-file", "{w}/new6.key",
                                                "--tag-store", "/proc/citadel-tags.json"], words=["tag store"],
         after=absent("v16", "new6.key")),
    Case("volume-create-tag-store-garbage", ["volume", "create", "{w}/v17", "--key-file", "{w}/new7.key",
                                             "--tag-store", "{w}/garbage.key"], words=["not valid JSON"],
         after=absent("v17", "new7.key")),
    Case("volume-cas-flags-without-config-id", ["volume", "create", "{w}/v18", "--volume", "x"],
         words=["--config-id"], rc=2, after=absent("v18")),
    Case("volume-show-wrong-key", ["volume", "show", "{w}/vol", "--key-file", "{w}/wrong.key"],
         words=["key does not open"]),
    Case("volume-show-not-a-volume", ["volume", "show", "{w}/adir"] + _VK, words=["not a Citadel volume"]),
    Case("volume-show-missing", ["volume", "show", "{w}/nope"] + _VK, words=["not a Citadel volume"]),
    Case("volume-show-key-missing", ["volume", "show", "{w}/vol", "--key-file", "{w}/nope.key"],
         words=["cannot read the key file"], rc=2),
    Case("volume-show-expected-tag-not-hex", ["volume", "show", "{w}/vol", "--expected-tag", "zz"] + _VK,
         words=["--expected-tag", "64 hex digits"], rc=2),
    Case("volume-show-expected-tag-older", ["volume", "show", "{w}/vol", "--expected-tag", "ab" * 32] + _VK,
         words=["not at its latest state"]),
    Case("volume-import-source-missing", ["volume", "import", "{w}/vol", "{w}/nope"] + _VK, words=["cannot import"],
         after=same_bytes("vol/manifest", "vol-manifest.orig")),
    Case("volume-import-one-of-two-sources-missing-commits-nothing", ["volume", "import", "{w}/vol", "{w}/afile",
                                                                      "{w}/nope"] + _VK, words=["cannot import"],
         after=same_bytes("vol/manifest", "vol-manifest.orig")),
    Case("volume-import-to-outside-the-volume", ["volume", "import", "{w}/vol", "{w}/afile", "--to", "../.."] + _VK,
         words=["cannot import", "../.."], after=same_bytes("vol/manifest", "vol-manifest.orig")),
    Case("volume-import-to-a-file", ["volume", "import", "{w}/vol", "{w}/nonempty", "--to", "afile"] + _VK,
         words=["cannot import", "afile"], after=same_bytes("vol/manifest", "vol-manifest.orig")),
    Case("volume-import-wrong-key", ["volume", "import", "{w}/vol", "{w}/afile", "--key-file", "{w}/wrong.key"],
         words=["key does not open"]),
    Case("volume-export-target-exists", ["volume", "export", "{w}/vol", "{w}/nonempty"] + _VK,
         words=["already exists"]),
    Case("volume-export-parent-missing", ["volume", "export", "{w}/vol", "{w}/nodir2/x"] + _VK,
         words=["does not exist"], after=absent("nodir2")),
    Case("volume-export-parent-is-a-file", ["volume", "export", "{w}/vol", "{w}/afile/x"] + _VK,
         words=["is a file"]),
    Case("volume-export-unwritable", ["volume", "export", "{w}/vol", "/proc/citadel-export"] + _VK,
         words=["cannot export"]),
    Case("volume-export-path-missing", ["volume", "export", "{w}/vol", "{w}/e1", "--path", "nope"] + _VK,
         words=["no directory"], after=absent("e1")),
    Case("volume-export-state-not-hex", ["volume", "export", "{w}/vol", "{w}/e2", "--state", "zz"] + _VK,
         words=["--state", "64 hex digits"], rc=2, after=absent("e2")),
    Case("volume-export-tag-store-older-than-volume", ["volume", "export", "{w}/vol", "{w}/e3", "--tag-store",
                                                       "{w}/stale-tags.json", "--name", "vol"] + _VK,
         words=["not at its latest state"], after=absent("e3")),
]

CAS_SERVE = [
    Case("cas-without-action", ["cas"], kind="usage", words=["ACTION"]),
    Case("cas-serve-port-in-use", ["cas", "serve", "--state-dir", "{w}/cs1", "--port", "{busy_port}"],
         words=["Address already in use", "cannot listen"], after=absent("cs1")),
    Case("cas-serve-port-out-of-range", ["cas", "serve", "--state-dir", "{w}/cs2", "--port", "99999"],
         words=["port"], after=absent("cs2")),
    Case("cas-serve-host-not-an-address", ["cas", "serve", "--state-dir", "{w}/cs3", "--host", "256.1.1.1",
                                           "--port", "0"], words=["cannot listen", "256.1.1.1"], after=absent("cs3")),
    Case("cas-serve-state-dir-is-a-file", ["cas", "serve", "--state-dir", "{w}/afile", "--port", "0"],
         words=["state directory", "is a file"]),
    Case("cas-serve-state-dir-unwritable", ["cas", "serve", "--state-dir", "/proc/citadel-cas", "--port", "0"],
         words=["cannot create the state directory"]),
    Case("cas-serve-db-url-garbage", ["cas", "serve", "--state-dir", "{w}/cs4", "--port", "0", "--db-url", "banana"],
         words=["not a database URL"]),
    Case("cas-serve-db-url-mysql", ["cas", "serve", "--state-dir", "{w}/cs5", "--port", "0", "--db-url",
                                    "mysql://x/y"], words=["not supported"]),
    Case("cas-serve-db-url-unreachable", ["cas", "serve", "--state-dir", "{w}/cs6", "--port", "0", "--db-url",
                                          "postgresql://u@127.0.0.1:1/db"], words=["cannot migrate"]),
    Case("cas-serve-trust-missing", ["cas", "serve", "--state-dir", "{w}/cs7", "--port", "0", "--trust",
                                     "{w}/nope.json"], words=["trust file"], after=absent("cs7")),
    Case("cas-serve-trust-not-json", ["cas", "serve", "--state-dir", "{w}/cs8", "--port", "0", "--trust",
                                      "{w}/garbage.key"], words=["trust file"], after=absent("cs8")),
    Case("cas-serve-trust-unknown-kind", ["cas", "serve", "--state-dir", "{w}/cs9", "--port", "0", "--trust",
                                          "{w}/trust-kind.json"], words=["banana"], after=absent("cs9")),
    Case("cas-serve-trust-root-missing", ["cas", "serve", "--state-dir", "{w}/cs10", "--port", "0", "--trust",
                                          "{w}/trust-root.json"], words=["trust file", "sgx"], after=absent("cs10")),
    Case("cas-serve-workers-zero", ["cas", "serve", "--state-dir", "{w}/cs11", "--workers", "0"], words=["workers"]),
    Case("cas-serve-workers-with-port-0", ["cas", "serve", "--state-dir", "{w}/cs12", "--workers", "2", "--port", "0"],
         words=["--workers needs a fixed --port"], after=absent("cs12")),
    Case("cas-serve-tls-cert-without-key", ["cas", "serve", "--state-dir", "{w}/cs13", "--port", "0", "--tls-cert",
                                            "{w}/garbage.key"], words=["--tls-key"]),
    Case("cas-serve-tls-cert-garbage", ["cas", "serve", "--state-dir", "{w}/cs14", "--port", "0", "--tls-cert",
                                        "{w}/garbage.key", "--tls-key", "{w}/garbage.key"], words=["TLS"]),
    Case("cas-serve-master-key-missing", ["cas", "serve", "--state-dir", "{w}/cs15", "--port", "0",
                                          "--master-key-file", "{w}/nope.key"], words=["master key"]),
    Case("cas-serve-master-key-garbage", ["cas", "serve", "--state-dir", "{w}/cs16", "--port", "0",
                                          "--master-key-file", "{w}/garbage-600.key"], words=["master key"]),
    Case("cas-serve-collateral-missing", ["cas", "serve", "--state-dir", "{w}/cs17", "--port", "0", "--collateral",
                                          "{w}/nope"], words=["collateral"]),
    Case("cas-serve-client-key-unwritable", ["cas", "serve", "--state-dir", "{w}/cs18", "--port", "0"],
         env={"HOME": "/proc/citadel-home"}, words=["client key"], after=absent("cs18")),
    Case("cas-fingerprint-no-state", ["cas", "fingerprint", "--state-dir", "{w}/nope"], words=["no CAS certificate"],
         rc=2),
    Case("cas-fingerprint-cert-garbage", ["cas", "fingerprint", "--tls-cert", "{w}/garbage.key"], words=["TLS"]),
    Case("cas-audit-verify-no-database", ["cas", "audit", "verify", "--state-dir", "{w}/nope"],
         words=["no CAS database"], rc=2),
    Case("cas-migrate-unwritable", ["cas", "migrate", "--state-dir", "/proc/citadel-cas"], words=["database"]),
]

_C = ["--cas", "{cas}", "--cas-fingerprint", "{fp}"]
CLIENT = [
    Case("session-without-action", ["session"], kind="usage", words=["ACTION"]),
    Case("session-cas-unreachable", ["session", "list", "--cas", "https://127.0.0.1:1", "--cas-fingerprint", "{fp}"],
         words=["cannot reach"], rc=75),
    Case("session-cas-not-pinned", ["session", "list", "--cas", "https://127.0.0.1:1"], words=["no fingerprint"]),
    Case("session-wrong-pin", ["session", "list", "--cas", "{cas}", "--cas-fingerprint", "sha256:" + "0" * 64],
         words=["not the pinned"], rc=77),
    Case("session-pin-garbage", ["session", "list", "--cas", "{cas}", "--cas-fingerprint", "zz"],
         words=["fingerprint"]),
    Case("session-cas-http", ["session", "list", "--cas", "http://127.0.0.1:8443", "--cas-fingerprint", "{fp}"],
         words=["not https"]),
    Case("session-cas-unclosed-bracket", ["session", "list", "--cas", "https://[::1", "--cas-fingerprint", "{fp}"],
         words=["']'"]),
    Case("session-cas-bad-port", ["session", "list", "--cas", "https://127.0.0.1:99999", "--cas-fingerprint", "{fp}"],
         words=["invalid port"]),
    Case("session-validate-missing", ["session", "validate", "{w}/nope.yaml"], words=["cannot read policy"], rc=2),
    Case("session-validate-directory", ["session", "validate", "{w}/adir"], words=["cannot read policy"], rc=2),
    Case("session-validate-binary", ["session", "validate", "{w}/binary.yaml"], words=["cannot read policy"], rc=2),
    Case("session-validate-malformed-yaml", ["session", "validate", "{w}/malformed.yaml"], kind="issues",
         words=["malformed.yaml:2", "YAML syntax"]),
    Case("session-validate-policy-with-errors", ["session", "validate", "{w}/errors.yaml"], kind="issues",
         words=["errors.yaml:1", "errors.yaml:2", "services"]),
    Case("session-validate-unknown-secret", ["session", "validate", "{w}/unknown-secret.yaml"], kind="issues",
         words=["unknown secret 'nosuch'"]),
    Case("session-validate-empty", ["session", "validate", "{w}/empty.key"], kind="issues", words=["empty"]),
    Case("session-validate-stdin-malformed", ["session", "validate", "-"], kind="issues", stdin="a: [\n",
         words=["<stdin>:2"]),
    Case("session-create-malformed-yaml", ["session", "create", "{w}/malformed.yaml"] + _C, kind="issues",
         words=["YAML syntax"]),
    Case("session-create-policy-with-errors", ["session", "create", "{w}/errors.yaml"] + _C, kind="issues",
         words=["services"]),
    Case("session-create-exists", ["session", "create", "{w}/good.yaml"] + _C, words=["already exists"]),
    Case("session-update-without-predecessor", ["session", "update", "{w}/good.yaml"] + _C,
         words=["predecessor"]),
    Case("session-update-predecessor-garbage", ["session", "update", "{w}/good.yaml", "--predecessor", "abcd"] + _C,
         words=["--predecessor", "64 hex digits"], rc=2),
    Case("session-show-missing", ["session", "show", "nope"] + _C, words=["does not exist"]),
    Case("session-show-bad-name", ["session", "show", "../x"] + _C, words=["not a valid name"], rc=2),
    Case("session-delete-missing", ["session", "delete", "nope"] + _C, words=["does not exist"]),
    Case("session-client-key-garbage", ["session", "list", "--client-key", "{w}/garbage.key"] + _C,
         words=["client key"]),
    Case("session-client-key-unwritable", ["session", "list", "--client-key", "/proc/citadel-client.key"] + _C,
         words=["cannot make the client key"]),
    Case("platform-without-action", ["platform"], kind="usage", words=["ACTION"]),
    Case("platform-add-public-key-garbage", ["platform", "add", "x", "--public-key", "zz"] + _C,
         words=["--public-key"], rc=2),
    Case("platform-add-key-garbage", ["platform", "add", "x", "--key", "{w}/garbage.key"] + _C,
         words=["Ed25519 private key"]),
    Case("platform-add-key-is-a-directory", ["platform", "add", "x", "--key", "{w}/adir"] + _C,
         words=["platform key"]),
    Case("platform-add-key-unwritable", ["platform", "add", "x", "--key", "/proc/citadel-platform.key"] + _C,
         words=["cannot make the sim platform key"]),
    Case("platform-add-bad-name", ["platform", "add", "bad name/..", "--public-key", "0" * 64] + _C,
         words=["not a valid name"], rc=2),
    Case("platform-add-exists", ["platform", "add", "host-1", "--key", "{w}/platform.key"] + _C,
         words=["already registered"]),
    Case("platform-add-tpm-with-sim-flags", ["platform", "add", "x", "--kind", "tpm", "--public-key", "0" * 64] + _C,
         words=["sim platforms"], rc=2),
    Case("platform-add-sim-with-tpm-flags", ["platform", "add", "x", "--tpm", "tcp:127.0.0.1:1"] + _C,
         words=["register TPM platforms"], rc=2),
    Case("platform-add-tpm-unreachable", ["platform", "add", "x", "--kind", "tpm", "--tpm", "tcp:127.0.0.1:1"] + _C,
         words=["cannot connect to the TPM"]),
    Case("platform-add-ak-pem-missing", ["platform", "add", "x", "--kind", "tpm", "--ak-pem", "{w}/nope"] + _C,
         words=["cannot read the AK file"], rc=2),
    Case("platform-add-ak-pem-garbage", ["platform", "add", "x", "--kind", "tpm", "--ak-pem", "{w}/garbage.key"] + _C,
         words=["PEM public key"]),
    Case("platform-remove-missing", ["platform", "remove", "nope"] + _C, words=["not registered"]),
    Case("platform-add-not-an-operator", ["platform", "add", "y", "--public-key", "1" * 64] + _C,
         env={"HOME": "{w}/other-home"}, words=["not an operator"]),
    Case("volume-create-cas-unreachable", ["volume", "create", "{w}/cv1", "--config-id", "s", "--volume", "v",
                                           "--cas", "https://127.0.0.1:1", "--cas-fingerprint", "{fp}"],
         words=["cannot reach"], after=absent("cv1")),
]

DOCTOR = [
    Case("doctor-bad-setting-fails-with-its-remedy", ["doctor"], kind="doctor", env={"CITADEL_HEAP": "12X"},
         words=["CITADEL_HEAP", "e.g. CITADEL_HEAP=256M"]),
    Case("doctor-cache-dir-unwritable", ["doctor"], kind="doctor", env={"CITADEL_CACHE_DIR": "/proc/citadel-cache"},
         words=["CITADEL_CACHE_DIR"]),
]

HELP = [
    ["--help"], ["seal", "--help"], ["run", "--help"], ["python", "--help"], ["measure", "--help"],
    ["evidence", "--help"], ["evidence", "verify", "--help"], ["evidence", "pack-tpm", "--help"],
    ["collateral", "--help"], ["collateral", "fetch", "--help"], ["collateral", "list", "--help"],
    ["cas", "--help"], ["cas", "serve", "--help"], ["cas", "fingerprint", "--help"], ["cas", "migrate", "--help"],
    ["cas", "audit", "verify", "--help"],
    ["session", "--help"], ["session", "create", "--help"], ["session", "update", "--help"],
    ["session", "show", "--help"], ["session", "list", "--help"], ["session", "delete", "--help"],
    ["session", "whoami", "--help"], ["session", "schema", "--help"], ["session", "validate", "--help"],
    ["platform", "--help"], ["platform", "add", "--help"], ["platform", "list", "--help"],
    ["platform", "remove", "--help"],
    ["volume", "--help"], ["volume", "create", "--help"], ["volume", "show", "--help"], ["volume", "import", "--help"],
    ["volume", "export", "--help"], ["doctor", "--help"],
]


# --- fixtures -----------------------------------------------------------------------------------
def _cli(args: Sequence[str], env: Dict[str, str], *, stdin: Optional[str] = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(citadel_cmd() + list(args), capture_output=True, text=True, env=env,
                          input=stdin if stdin is not None else "", timeout=timeout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, vectors_dir: Path) -> Path:
    w = tmp_path_factory.mktemp("errpaths")
    env = clean_env(CITADEL_MODE="sim", HOME=str(w / "home"))
    app = w / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "app.py").write_text("import sys\nimport helper\nprint(helper.greet(*sys.argv[1:]))\n")
    (app / "helper.py").write_text("def greet(*names):\n    return 'hello ' + ' '.join(names)\n")
    (app / "pkg" / "__init__.py").write_text("")
    sealed = _cli(["seal", str(app), "-o", str(w / "app.img"), "--key-out", str(w / "app.key"), "-q"], env)
    assert sealed.returncode == 0, sealed.stderr
    for name, change in (("tampered", "tamper"), ("nomanifest", "manifest"), ("truncated", "truncate"),
                         ("deleted", "delete")):
        copy = w / f"{name}.img"
        shutil.copytree(w / "app.img", copy)
        if change == "tamper":
            data = bytearray((copy / "app.py").read_bytes())
            data[-20] ^= 1
            (copy / "app.py").write_bytes(bytes(data))
        elif change == "manifest":
            (copy / ".citadel" / "manifest").unlink()
        elif change == "truncate":
            (copy / ".citadel" / "manifest").write_bytes(b"")
        else:
            (copy / "helper.py").unlink()
    (w / "wrong.key").write_text("ab" * 32 + "\n")
    (w / "garbage.key").write_text("garbage")
    (w / "garbage-600.key").write_text("garbage")
    os.chmod(w / "garbage-600.key", 0o600)
    (w / "empty.key").write_text("")
    (w / "adir").mkdir()
    (w / "afile").write_text("x")
    (w / "nonempty").mkdir()
    (w / "nonempty" / "f.txt").write_text("f")
    (w / "array.json").write_text("[1]")
    (w / "withfifo").mkdir()
    (w / "withfifo" / "app.py").write_text("print(1)\n")
    os.mkfifo(w / "withfifo" / "fifo")
    (w / "escaping").mkdir()
    (w / "escaping" / "passwd").symlink_to("/etc/passwd")
    (w / "looping").mkdir()
    (w / "looping" / "loop").symlink_to(".")
    (w / "badname").mkdir()
    (w / "badname" / os.fsdecode(b"\xff\xfe")).write_text("x")
    shutil.copy(vectors_dir / "tpm" / "swtpm_quote.attest", w / "attest.bin")
    shutil.copy(vectors_dir / "tpm" / "swtpm_quote.attest", w / "attest.orig")
    (w / "malformed.yaml").write_text("a: [\n")
    (w / "errors.yaml").write_text("name: x\nservices: 5\n")
    (w / "binary.yaml").write_bytes(b"\xff\xfe")
    (w / "good.yaml").write_text(policy("errpaths"))
    (w / "unknown-secret.yaml").write_text(policy("errpaths2").replace("$$citadel:token$$", "$$citadel:nosuch$$"))
    (w / "trust-kind.json").write_text('{"banana": {}}')
    (w / "trust-root.json").write_text('{"sgx": {"root": "%s"}}' % (w / "nope.pem"))
    vol = ["--key-file", str(w / "vol.key"), "--tag-store", str(w / "tags.json"), "--name", "vol"]
    for step in (["volume", "create", str(w / "vol"), *vol],
                 ["volume", "import", str(w / "vol"), str(w / "afile"), *vol]):
        result = _cli(step, env)
        assert result.returncode == 0, result.stderr
    shutil.copy(w / "vol" / "manifest", w / "vol-manifest.orig")
    # a tag store that recorded only the first state: the volume is not the state it knows
    (w / "stale-tags.json").write_text('{"vol": "%s"}' % ("cd" * 32))
    return w


@pytest.fixture(scope="module")
def kds(vectors_dir: Path) -> Iterator[str]:
    """A local stand-in for AMD's KDS: /ok answers with real data, /garbage with junk, /missing 404s."""
    vectors = vectors_dir

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.startswith("/missing"):
                self.send_error(404)
                return
            if self.path.startswith("/garbage"):
                body = b"garbage"
            elif self.path.endswith("cert_chain"):
                body = (vectors / "roots" / "ask_ark_milan.pem").read_bytes()
            else:
                body = (vectors / "snp" / "milan_report_v2.vcek.der").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="module")
def cas(workspace: Path) -> Iterator[CasServer]:
    """One CAS whose operator is the workspace's HOME, with a session and a platform already made."""
    home = workspace / "home"
    home.mkdir(exist_ok=True)
    server = CasServer(workspace / "cas-state", home).start()
    try:
        for args in (["platform", "add", "host-1", "--key", str(workspace / "platform.key")],
                     ["session", "create", str(workspace / "good.yaml")]):
            result = server.cli(args)
            assert result.returncode == 0, result.stderr
        yield server
    finally:
        server.stop()


# --- the checks ---------------------------------------------------------------------------------
def _context(workspace: Path, vectors_dir: Path, **extra: object) -> Dict[str, object]:
    return {"w": workspace, "img": workspace / "app.img", "key": workspace / "app.key", "V": vectors_dir, **extra}


def _run_case(case: Case, ctx: Dict[str, object]) -> subprocess.CompletedProcess:
    w = Path(str(ctx["w"]))
    env = clean_env(CITADEL_MODE="sim", HOME=str(w / "home"))
    env.update({k: v.format(**ctx) for k, v in case.env.items()})
    args = [a.format(**ctx) for a in case.argv]
    result = _cli(args, env, stdin=case.stdin)
    _assert_outcome(case, result)
    if case.after is not None:
        case.after(w)
    return result


def assert_two_lines(stderr: str) -> str:
    """The shape: notes or warnings (citadel: ...) may come first; the last two lines are error and hint."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) >= 2, f"expected `citadel: error:` and `citadel: hint:` lines, got:\n{stderr}"
    error, hint = lines[-2], lines[-1]
    assert error.startswith("citadel: error: "), f"no cause line:\n{stderr}"
    assert hint.startswith("citadel: hint: ") and len(hint) > len("citadel: hint: ") + 3, f"no remedy:\n{stderr}"
    assert sum(line.startswith("citadel: error:") for line in lines) == 1, f"more than one error:\n{stderr}"
    strays = [line for line in lines[:-2] if not line.startswith("citadel: ")]
    assert not strays, f"stray output before the error: {strays}"
    return error


def _assert_outcome(case: Case, result: subprocess.CompletedProcess) -> None:
    out = f"exit {result.returncode}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, out
    if case.rc is not None:
        assert result.returncode == case.rc, out
    if case.kind == "doctor":
        assert result.returncode == 1, out
        text = result.stdout
    elif case.kind == "usage-stdout":
        assert result.returncode != 0 and "usage: citadel" in result.stdout, out
        text = result.stdout
    elif case.kind == "usage":
        assert result.returncode == 2 and "usage: citadel" in result.stderr and "error:" in result.stderr, out
        text = result.stderr
    elif case.kind == "issues":  # the policy's errors, each pointing at a line, then one hint
        assert result.returncode != 0, out
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("citadel: hint: "), out
        assert all(line.startswith("citadel: error: ") for line in lines[:-1]) and len(lines) >= 2, out
        text = result.stderr
    else:
        assert result.returncode != 0, out
        text = assert_two_lines(result.stderr)
    for word in case.words:
        assert word.lower() in text.lower(), f"{word!r} not in the message\n{out}"


LOCAL = TOP + SEAL + RUN + PYTHON_MEASURE + EVIDENCE + VOLUME + DOCTOR


@pytest.mark.parametrize("case", [param(c) for c in LOCAL])
def test_error_path(case: Case, workspace: Path, vectors_dir: Path) -> None:
    _run_case(case, _context(workspace, vectors_dir))


@pytest.mark.parametrize("case", [param(c) for c in COLLATERAL])
def test_collateral_error_path(case: Case, workspace: Path, vectors_dir: Path, kds: str) -> None:
    _run_case(case, _context(workspace, vectors_dir, kds=kds))


@pytest.mark.parametrize("case", [param(c) for c in CAS_SERVE])
def test_cas_serve_error_path(case: Case, workspace: Path, vectors_dir: Path, busy_port: int) -> None:
    _run_case(case, _context(workspace, vectors_dir, busy_port=busy_port))


@pytest.mark.parametrize("case", [param(c) for c in CLIENT])
def test_cas_client_error_path(case: Case, workspace: Path, vectors_dir: Path, cas: CasServer) -> None:
    _run_case(case, _context(workspace, vectors_dir, cas=cas.url, fp=cas.fingerprint))


@pytest.mark.parametrize("argv", HELP, ids=["-".join(a[:-1]) or "citadel" for a in HELP])
def test_help_exits_0_with_examples(argv: List[str], workspace: Path) -> None:
    result = _cli(argv, clean_env(CITADEL_MODE="sim", HOME=str(workspace / "home")))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("usage: citadel"), result.stdout[:200]
    assert "examples:" in result.stdout or "\n  citadel " in result.stdout, f"no examples in {argv}"


@pytest.mark.parametrize("argv", [["session", "schema"], ["--help"], ["seal", "--help"]],
                         ids=["session-schema", "help", "seal-help"])
def test_a_closed_pipe_is_not_a_traceback(argv: List[str], workspace: Path) -> None:
    """`citadel ... | head -1`: the reader leaves early; citadel stops quietly."""
    env = clean_env(CITADEL_MODE="sim", HOME=str(workspace / "home"))
    proc = subprocess.Popen(citadel_cmd() + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before citadel (still starting) writes anything
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_settings_help_names_every_setting(workspace: Path) -> None:
    """`citadel run --help` explains each CITADEL_* setting the engine reads."""
    result = _cli(["run", "--help"], clean_env(HOME=str(workspace / "home")))
    for setting in ("CITADEL_MODE", "CITADEL_HEAP", "CITADEL_STACK", "CITADEL_ALLOW_DLOPEN", "CITADEL_VERSION",
                    "CITADEL_HASH", "CITADEL_LOG", "CITADEL_CAS_ADDR", "CITADEL_CONFIG_ID"):
        assert setting in result.stdout, setting
