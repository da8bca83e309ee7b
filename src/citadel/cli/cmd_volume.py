"""Create, inspect, import into and export from encrypted volumes (the data owner's tools).

A volume is a directory the host stores but cannot read, change or roll back. The owner puts
plaintext files in before a run (`import`) and takes results out after it (`export`), with the
volume's key. With --tag-store, every commit is a compare-and-swap of the volume's tag in that
file (the local stand-in for the CAS) and an older copy of the volume is refused.

With --config-id SESSION[/SERVICE] --volume NAME the CAS holds the key and the latest tag: the
command asks it for both as a signed client (readers of the session may show and export,
updaters may create and import), refuses any state but the latest, and records each new tag
with the CAS's compare-and-swap.

examples:
  citadel volume create ./vol-in --key-file in.key
  citadel volume import ./vol-in data/ --key-file in.key
  citadel volume show ./vol-in --key-file in.key --verify
  citadel volume export ./vol-out ./results --key-file out.key
  citadel volume create ./vol-in --config-id demo/app --volume inputs --cas https://cas:8443
  citadel volume import ./vol-in data/ --config-id demo/app --volume inputs
  citadel volume export ./vol-out ./results --config-id demo/app --volume results
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, List, Optional, Tuple

from citadel.cli.cmd_session import add_client_arguments
from citadel.cli.helptext import add_action
from citadel.cli.output import emit_json, info
from citadel.errors import UsageError
from citadel.volume import LocalTagStore, Volume, VolumeError, parse_key
from citadel.volume.format import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from citadel.volume.store import MANIFEST
from citadel.volume.transfer import describe, export_tree, import_path, kept_states


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("volume", metavar="DIR", help="the volume's directory")
        p.add_argument("--key-file", metavar="FILE",
                       help="the volume key (64 hex digits); `create` writes a new one (mode 0600) if absent")
        p.add_argument("--tag-store", metavar="FILE",
                       help="local tag store file: refuse older states and record each new tag")
        p.add_argument("--name", help="the volume's name in the tag store (default: the directory's name)")
        p.add_argument("--json", action="store_true", help="print a JSON object for scripts")
        p.add_argument("--config-id", metavar="SESSION[/SERVICE]",
                       help="the CAS holds this volume's key and latest tag (instead of --key-file)")
        p.add_argument("--volume", metavar="NAME", dest="cas_volume",
                       help="the volume's name in the session (with --config-id)")
        add_client_arguments(p)

    create = add_action(sub, "create", "make a new, empty volume", [
        "citadel volume create ./vol-in --key-file in.key                 # writes in.key (0600) if absent",
        "citadel volume create ./vol-out --key-file out.key --tag-store tags.json --name out",
        "citadel volume create ./vol-in --config-id demo/app --volume inputs --cas https://cas:8443",
    ])
    common(create)
    create.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="BYTES",
                        help="plaintext bytes per sealed chunk, fixed for the volume's life (default: 65536)")

    show = add_action(sub, "show", "print a volume's tag, files and kept conflict states", [
        "citadel volume show ./vol-in --key-file in.key --verify",
        "citadel volume show ./vol-out --key-file out.key --tag-store tags.json --name out --json",
    ])
    common(show)
    show.add_argument("--verify", action="store_true", help="authenticate every byte of every file")
    show.add_argument("--expected-tag", metavar="TAG", help="refuse any state but this one")

    imp = add_action(sub, "import", "copy plaintext files or directories into a volume", [
        "citadel volume import ./vol-in data/ --key-file in.key",
        "citadel volume import ./vol-in a.csv b.csv --to inputs --key-file in.key --tag-store tags.json --name in",
    ])
    common(imp)
    imp.add_argument("sources", nargs="+", metavar="SRC", help="files or directories to copy in")
    imp.add_argument("--to", default="", metavar="PATH", help="directory inside the volume (default: its root)")
    imp.add_argument("--expected-tag", metavar="TAG", help="refuse any state but this one")

    exp = add_action(sub, "export", "write a volume's files as plaintext into a new directory", [
        "citadel volume export ./vol-out ./results --key-file out.key",
        "citadel volume export ./vol-out ./conflict --key-file out.key --state TAG   # a kept conflict state",
    ])
    common(exp)
    exp.add_argument("dest", metavar="DEST", help="new directory to create")
    exp.add_argument("--path", default="", help="export only this directory of the volume")
    exp.add_argument("--expected-tag", metavar="TAG", help="refuse any state but this one")
    exp.add_argument("--state", metavar="TAG",
                     help="export a kept state (a refused conflict) instead of the current one")


def _key(path: str, create: bool) -> Tuple[bytes, bool]:
    """The volume key from ``path`` and whether this call wrote it (``create`` and no file yet)."""
    if create and not os.path.exists(path):
        key = os.urandom(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot write the key file {path!r}: {exc.strerror}",
                             "choose a writable path for --key-file") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        info(f"citadel: wrote a new volume key to {path} (keep it secret; without it the data is lost)")
        return key, True
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return parse_key(fh.read(4096)), False
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path!r}: {exc.strerror}", "check --key-file") from None


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad values before anything is written (a new key file, a volume directory).

    --expected-tag and --state name a volume tag: 64 hex digits, as `citadel volume show` prints.
    """
    chunk_size = getattr(args, "chunk_size", None)
    if chunk_size is not None and not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(f"--chunk-size must be between 1 and {MAX_CHUNK_SIZE}", "use the default, 65536")
    for flag in ("expected_tag", "state"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        text = value.strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            option = "--" + flag.replace("_", "-")
            raise UsageError(f"{option} {value!r} is not a volume tag (64 hex digits)",
                             "copy the tag `citadel volume show` prints")
        setattr(args, flag, text)


def _tags(args: argparse.Namespace) -> Tuple[Optional[str], Optional[Callable[[str, str], None]]]:
    expected = getattr(args, "expected_tag", None)
    if not args.tag_store:
        return expected, None
    store = LocalTagStore(args.tag_store)
    name = args.name or os.path.basename(os.path.normpath(args.volume))
    recorded = store.current(name)
    if expected and recorded and expected.lower() != recorded:
        raise UsageError("--expected-tag differs from the tag store's latest tag",
                         "drop --expected-tag; the tag store decides")
    return expected or recorded, store.on_commit(name)


def run(args: argparse.Namespace) -> int:
    if args.config_id is None:
        if args.cas_volume or args.cas or args.cas_fingerprint:
            raise UsageError("--volume, --cas and --cas-fingerprint go with --config-id", "add --config-id SESSION")
        if not args.key_file:
            raise UsageError("the volume's key is needed", "pass --key-file FILE, or --config-id and --volume "
                             "to ask the CAS for it")
        _check_arguments(args)
        key, created = _key(args.key_file, create=args.action == "create")
        try:
            return _run(args, key, *_tags(args))
        except BaseException:
            if created and not os.path.exists(os.path.join(args.volume, MANIFEST)):
                with contextlib.suppress(OSError):  # the new key protects nothing: leave no stray secret
                    os.unlink(args.key_file)
                    info(f"citadel: removed the new key file {args.key_file}: no volume was created")
            raise
    _check_arguments(args)
    with _CasVolume(args) as cas:
        status = _run(args, cas.key, cas.expected(args), cas.on_commit())
    cas.finish()
    return status


def _run(args: argparse.Namespace, key: bytes, expected: Optional[str],
         on_commit: Optional[Callable[[str, str], None]]) -> int:
    action = args.action
    if action == "create":
        vol = Volume.create(args.volume, key, on_commit=on_commit, chunk_size=args.chunk_size)
        vol.close()
        return _done(args, {"volume": vol.root, "tag": vol.tag}, vol.tag)
    if action == "show":
        with Volume.open(args.volume, key, expected_tag=expected, read_only=True) as vol:
            doc = describe(vol)
            if args.verify:
                doc["verified_bytes"] = vol.verify()
        doc["kept_states"] = [vars(s) for s in kept_states(doc["volume"], key)]  # type: ignore[arg-type]
        if args.json:
            emit_json(doc)
        else:
            _print_show(doc, args.verify)
        return 0
    if action == "import":
        vol = Volume.open(args.volume, key, expected_tag=expected, on_commit=on_commit, auto_commit=False)
        try:
            files = total = 0
            for src in args.sources:
                result = import_path(vol, src, args.to)
                files, total = files + result.files, total + result.bytes
            vol.commit()
        except BaseException:
            vol.abandon()  # all sources or none: a failed import leaves the volume as it was
            raise
        vol.close()
        info(f"citadel: imported {files} file(s), {total} bytes")
        return _done(args, {"volume": vol.root, "tag": vol.tag, "files": files, "bytes": total}, vol.tag)
    if action == "export":
        if args.state and expected and not args.config_id:
            raise UsageError("--state exports a kept state; it cannot be combined with the latest tag",
                             "drop --state, or drop --tag-store/--expected-tag")
        with Volume.open(args.volume, key, expected_tag=args.state or expected, read_only=True) as vol:
            result = export_tree(vol, args.dest, args.path)
        info(f"citadel: exported {result.files} file(s), {result.bytes} bytes to {args.dest}")
        return _done(args, {"dest": args.dest, "tag": vol.tag, "files": result.files, "bytes": result.bytes},
                     vol.tag)
    raise UsageError(f"unknown action {action!r}", "see `citadel volume --help`")


class _CasVolume:
    """The CAS's part in one owner command: the key and latest tag it gave, and its compare-and-swap.

    The request is signed with the client key; the session's access policy decides (read access
    for show and export, update access for create and import), and the CAS audits it.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from urllib.parse import quote

        from citadel.cli.cmd_session import open_client

        if args.key_file or args.tag_store:
            raise UsageError("--config-id takes the key and the latest tag from the CAS",
                             "drop --key-file and --tag-store (or drop --config-id)")
        parts = args.config_id.split("/")
        if len(parts) > 2 or not args.cas_volume:
            raise UsageError("--config-id is SESSION or SESSION/SERVICE, and --volume NAME is needed with it",
                             "for example --config-id demo/app --volume results")
        self.session, self.volume = parts[0], args.cas_volume
        self.path = f"/v1/sessions/{quote(self.session, safe='')}/volumes/{quote(self.volume, safe='')}"
        self.client, self.endpoint = open_client(args)
        self.action = args.action
        self.recorded: Optional[int] = None
        access = "update" if args.action in ("create", "import") else "read"
        try:
            self.grant = self.client.transport.call(
                "POST", self.path + "/key", {"access": access, "service": parts[1] if len(parts) == 2 else None})
            self.key = parse_key(str(self.grant["key"]))
        except BaseException:
            self.client.close()
            raise

    def __enter__(self) -> _CasVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def expected(self, args: argparse.Namespace) -> Optional[str]:
        """The tag to insist on: the CAS's latest (None for a volume it never recorded, or ephemeral)."""
        tag = self.grant.get("tag")
        if self.action == "create" and tag:
            raise VolumeError(f"volume {self.volume!r} of session {self.session!r} already exists: the CAS "
                             f"records its tag {tag}", "import into its directory with `citadel volume import`")
        given = getattr(args, "expected_tag", None)
        if given and tag and given.lower() != tag:
            raise UsageError("--expected-tag differs from the CAS's latest tag", "drop --expected-tag; the CAS decides")
        return str(tag) if tag else None

    def on_commit(self) -> Optional[Callable[[str, str], None]]:
        """The CAS's compare-and-swap (None for an ephemeral volume: the CAS records no tag)."""
        from citadel.attest.client import post_volume_commit

        if self.grant.get("update_policy") != "rollback-protected":
            return None

        def swap(old_tag: str, new_tag: str) -> None:
            doc = {"old_tag": old_tag, "new_tag": new_tag, "base_generation": self.grant.get("generation")}
            answer = post_volume_commit(self.client.transport, self.path + "/commit", doc, self.volume)
            self.recorded = int(answer["generation"])

        return swap

    def finish(self) -> None:
        from citadel.cas import clientconf

        if self.endpoint.explicit:
            clientconf.remember(self.endpoint)
        if self.recorded is not None:
            info(f"citadel: the CAS recorded the new state of volume {self.volume!r} of session "
                 f"{self.session!r} (commit {self.recorded})")


def _done(args: argparse.Namespace, doc: dict, tag: str) -> int:
    if args.json:
        emit_json(doc)
    else:
        print(tag)
    return 0


def _print_show(doc: dict, verified: bool) -> None:
    lines: List[str] = [
        f"volume:      {doc['volume']}",
        f"tag:         {doc['tag']}",
        f"generation:  {doc['generation']}",
        f"files:       {len(doc['files'])} ({doc['plaintext_bytes']} bytes; {doc['stored_bytes']} bytes stored)",
    ]
    if verified:
        lines.append(f"verified:    every chunk of every file ({doc['verified_bytes']} bytes)")
    lines.extend(f"  {f['size']:>12}  {f['path']}" for f in doc["files"])
    for kept in doc["kept_states"]:
        lines.append(f"kept {kept['kind']} state: {kept['tag']} (generation {kept['generation']}, "
                     f"{kept['files']} files) -- export it with --state")
    print("\n".join(lines))


def _main(argv: Optional[List[str]] = None) -> int:
    """Run as `python -m citadel.cli.cmd_volume ...` (the same as `citadel volume ...`)."""
    from citadel.cli.main import main

    return main(["volume", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(_main())
