"""The engine's first stage after boot.py: put the verifying importer in place, then hand over.

boot.py imports this module with Python's own importer (so its cached bytecode is used) and it
is checked post hoc, like boot.py itself. It finds the cached engine manifest (building it once,
in a separate process, when it is absent), checks the bytes of ``trusted_base.py`` and
``trusted_import.py`` against it by hand *before* running them, and lets them install the finder
that verifies every later import and check what Python loaded before it existed; only then is
``citadel.engine.main`` imported. Standard library only: it runs before anything can vouch for it (docs/engine.md).
"""

from __future__ import annotations

import os
import sys

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, Mapping, Optional, Tuple

    Hasher = Callable[..., Any]

EXIT_ENGINE = 70


class BootFailure(Exception):
    def __init__(self, cause: str, remedy: str) -> None:
        super().__init__(cause)
        self.cause, self.remedy = cause, remedy

    def diagnostics(self) -> str:
        """Two lines, or none when the builder process has already printed them."""
        return f"citadel: error: {self.cause}\ncitadel: hint: {self.remedy}" if self.cause else ""


def sha256_constructor() -> Hasher:
    """The fastest SHA-256 this interpreter has (OpenSSL's when present)."""
    try:
        from _hashlib import openssl_sha256

        return openssl_sha256
    except ImportError:
        pass
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256


def cache_paths(citadel_parent: str, sha256: Hasher, env: Mapping[str, str], executable: str) -> Tuple[str, str]:
    """(manifest, cache) file paths for this interpreter and this citadel installation."""
    directory = env.get("CITADEL_CACHE_DIR", "")
    if not directory:
        xdg = env.get("XDG_CACHE_HOME", "")
        if xdg and os.path.isabs(xdg):
            directory = os.path.join(xdg, "citadel")
        else:
            home = env.get("HOME") or os.path.expanduser("~")
            directory = os.path.join(home, ".cache", "citadel")
    name = "engine-" + sha256(f"{executable}\0{citadel_parent}".encode()).hexdigest()[:24]
    return os.path.join(directory, name + ".manifest"), os.path.join(directory, name + ".cache")


def load_manifest(citadel_parent: str, engine_dir: str, sha256: Hasher) -> Tuple[str, str, str]:
    """(manifest text, cache text, manifest sha256), building both files first if needed."""
    manifest_path, cache_path = cache_paths(citadel_parent, sha256, os.environ, sys.executable)
    if os.environ.get("CITADEL_REBUILD", "") not in ("", "0"):
        build(citadel_parent, engine_dir, manifest_path, cache_path)
    for attempt in (1, 2):
        try:
            with open(manifest_path, "rb") as fh:
                raw = fh.read()
            with open(cache_path, encoding="utf-8") as fh:
                cache = fh.read()
            return raw.decode("utf-8"), cache, sha256(raw).hexdigest()
        except FileNotFoundError:
            if attempt == 2:
                raise
            build(citadel_parent, engine_dir, manifest_path, cache_path)
        except (OSError, UnicodeDecodeError) as exc:
            raise BootFailure(f"cannot read the engine manifest {manifest_path}: {exc}",
                              "set CITADEL_CACHE_DIR to a readable directory, or delete that file") from None
    raise AssertionError("unreachable")


def build(citadel_parent: str, engine_dir: str, manifest_path: str, cache_path: str) -> None:
    """Run base_manifest.py in a separate process of this interpreter (its code never runs here)."""
    builder = os.path.join(engine_dir, "base_manifest.py")
    argv = [sys.executable, "-I", "-S", "-B", builder, citadel_parent, manifest_path, cache_path]
    try:
        pid = os.fork()  # (PyPy has no posix_spawn; the builder runs once, so fork costs nothing here)
        if pid == 0:
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                os.execve(sys.executable, argv, dict(os.environ))
            finally:
                os._exit(127)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except OSError as exc:
        raise BootFailure(f"cannot build the engine manifest: {exc.strerror}",
                          "check that this Python installation is complete") from None
    if status == EXIT_ENGINE:  # the builder has printed its cause and remedy
        raise BootFailure("", "")
    if status != 0:
        raise BootFailure(f"building the engine manifest failed (status {status})",
                          f"see the messages above; the manifest would be written to {manifest_path}")


def load_verified(engine_dir: str, manifest: str, sha256: Hasher, name: str) -> Any:
    """Check citadel/engine/<name>.py (or its listed bytecode) against the manifest by hand, then run it.

    A listed bytecode file whose bytes differ is only a cache miss: the source is checked instead.
    """
    import _imp
    import marshal
    from _frozen_importlib import ModuleSpec
    from _frozen_importlib_external import MAGIC_NUMBER

    def pinned(key: str, path: str) -> Optional[bytes]:
        at = manifest.find(f" {key}\n")
        if at < 0:
            return None
        digest, size = manifest[manifest.rfind("\n", 0, at) + 1 : at].split(" ")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        return data if len(data) == int(size) and sha256(data).hexdigest() == digest else None

    source_path = os.path.join(engine_dir, name + ".py")
    tag = sys.implementation.cache_tag
    code = None
    data = pinned(f"citadel/citadel/engine/__pycache__/{name}.{tag}.pyc",
                  os.path.join(engine_dir, "__pycache__", f"{name}.{tag}.pyc"))
    if data is not None:
        st = os.stat(source_path)
        if (data[:8] == MAGIC_NUMBER + bytes(4) and int.from_bytes(data[8:12], "little") == int(st.st_mtime)
                & 0xFFFFFFFF and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF):
            code = marshal.loads(memoryview(data)[16:])
            _imp._fix_co_filename(code, source_path)  # type: ignore[attr-defined]
    if code is None:
        source = pinned(f"citadel/citadel/engine/{name}.py", source_path)
        if source is None:
            raise BootFailure(f"the engine file {source_path} differs from the measured engine",
                              "if you upgraded Python or Citadel, run `citadel measure --rebuild`")
        code = compile(source, source_path, "exec", dont_inherit=True)
    module = type(sys)(f"citadel.engine.{name}")
    module.__file__ = source_path
    # has_location False: checked here, before it ran, so the post-hoc check of modules that
    # Python's own importer loaded (which looks at __pycache__) does not apply to it
    module.__spec__ = ModuleSpec(module.__name__, None, origin=source_path)
    sys.modules[module.__name__] = module
    exec(code, module.__dict__)
    return module


def main(boot_path: str, started: float) -> int:
    """Everything boot.py does; returns the engine's exit status."""
    try:
        engine_dir = os.path.dirname(os.path.abspath(__file__))
        citadel_parent = os.path.dirname(os.path.dirname(engine_dir))
        sha256 = sha256_constructor()
        manifest, cache, digest = load_manifest(citadel_parent, engine_dir, sha256)
        load_verified(engine_dir, manifest, sha256, "trusted_base")
        trusted_import = load_verified(engine_dir, manifest, sha256, "trusted_import")
        base = trusted_import.install(manifest, cache, sha256=sha256, manifest_sha256=digest, boot_path=boot_path)
        from citadel.engine.main import run
    except Exception as exc:  # the engine's outermost frame: one clear message, no traceback
        if not hasattr(exc, "diagnostics"):
            raise
        text = exc.diagnostics()
        if text:
            sys.stderr.write(text + "\n")
        return EXIT_ENGINE
    return run(base, started=started)
