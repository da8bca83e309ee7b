"""Run the program the launch request names, and turn how it ended into an exit status.

A script runs as ``__main__`` with ``sys.argv = [script, *args]`` (like ``python app.py``), a
module like ``python -m`` (runpy), a command like ``python -c``, or an interactive console with a
banner that says the mode and the measurement. The program's own exit status passes through;
an uncaught exception prints the usual traceback and exits 1, as python does, except for
Citadel's refusals (one cause line, one remedy line) and MemoryError (heap advice). Mounted
volumes are committed after the program, whichever way it ended (`citadel.engine.volumes`).
Engine-safe: stdlib only, Python 3.9.
"""

from __future__ import annotations

import builtins
import os
import posixpath
import sys
import types

from citadel import __version__
from citadel.engine import exits, log
from citadel.engine.request import LaunchRequest
from citadel.engine.settings import format_size
from citadel.engine.tee import SIMULATION_NOTICE
from citadel.errors import CitadelError, ImageError, UsageError

MYPY = False
if MYPY:  # typing costs start-up time; only the type checker needs it
    from typing import Any, Callable, List, Optional, Tuple

    from citadel.engine.volumes import VolumeSet
    from citadel.seal.image import SealedImage


class Context:
    """What the runner needs to know about the engine it runs in."""

    __slots__ = ("mode", "tee", "measurement", "heap", "image", "volumes")

    def __init__(self, *, mode: str, tee: Optional[str], measurement: str, heap: Optional[int],
                 image: Optional[SealedImage], volumes: Optional[VolumeSet] = None) -> None:
        self.mode = mode
        self.tee = tee
        self.measurement = measurement
        self.heap = heap
        self.image = image
        self.volumes = volumes  # committed and closed at exit (atexit), however the program ends


def run(request: LaunchRequest, context: Context) -> int:
    """Run the program to its end; returns the process exit status."""
    if request.kind == "interactive":
        return _guarded(lambda: _console(request, context), context)
    if request.kind == "command":
        sys.argv = ["-c", *request.argv[1:]]
        main = _fresh_main(None)
        code = compile(request.command or "", "<string>", "exec", dont_inherit=True)
        return _guarded(lambda: exec(code, main.__dict__), context)
    if request.kind == "module":
        import runpy

        _check_runnable_module(request.module or "")
        sys.argv = [request.module or "", *request.argv[1:]]  # runpy puts the module's path first
        _fresh_main(None)
        run_as_main = getattr(runpy, "_run_module_as_main", None)
        if run_as_main is not None:  # what `python -m` itself uses: __main__ is the real module
            return _guarded(lambda: run_as_main(request.module, alter_argv=True), context)
        return _guarded(lambda: runpy.run_module(request.module or "", run_name="__main__", alter_sys=True),
                        context)
    return _run_script(request, context)


def _check_runnable_module(name: str) -> None:
    """`-m name` must name a module, or a package with __main__, that the engine can import."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise UsageError(f"no sealed or standard module named {name!r}",
                         "name a module inside the image (e.g. -m mypackage.cli), as you would for python -m")
    if spec.submodule_search_locations is not None:
        try:
            main_spec = importlib.util.find_spec(f"{name}.__main__")
        except (ImportError, ValueError):
            main_spec = None
        if main_spec is None:
            raise UsageError(f"{name!r} is a package without a __main__ module, so it cannot be run",
                             f"run one of its modules (-m {name}.something) or add {name}/__main__.py and re-seal")


# --- scripts ----------------------------------------------------------------------------------------
class _ScriptLoader:
    """Gives tracebacks (linecache) the script's verified source; nothing else."""

    def __init__(self, source: bytes) -> None:
        self._source = source

    def get_source(self, name: str) -> str:
        from importlib.util import decode_source

        return decode_source(self._source)


def script_relpath(image: SealedImage, given: str, cwd: Optional[str]) -> str:
    """The image path of the script: relative to the image root, else a host path inside the image."""
    candidates: List[Optional[str]] = []
    if not os.path.isabs(given):
        rel = posixpath.normpath(given.replace(os.sep, "/"))
        if not rel.startswith("../") and rel not in ("..", "."):
            candidates.append(rel)
        candidates.append(image.relpath(os.path.join(cwd or os.getcwd(), given)))
    else:
        candidates.append(image.relpath(given))
    for candidate in candidates:
        if candidate and image.entry(candidate) is not None:
            return candidate
    region = next((image.region_of(c) for c in candidates if c), None)
    if region == "unprotected":
        raise ImageError(f"the script {given!r} is in the image's unprotected region; the engine runs only "
                         "sealed code", "re-seal the application with the script in a protected region")
    if any(c is not None and image.is_dir(c) for c in candidates):
        raise UsageError(f"the script {given!r} is a directory of the image, not a file",
                         f"name a script inside it (e.g. {given.rstrip('/')}/app.py), or a package with -m")
    raise UsageError(f"the script {given!r} is not a sealed file of the image {image.root}",
                     "name the script by its path inside the sealed tree, e.g. app.py")


def _run_script(request: LaunchRequest, context: Context) -> int:
    image = context.image
    if image is None:  # the request parser makes this impossible; keep the type checker honest
        raise UsageError("a script needs a sealed image", "pass --image")
    rel = script_relpath(image, request.argv[0], request.cwd)
    path = image.host_path(rel)
    source = image.read(rel)
    code = compile(source, path, "exec", dont_inherit=True)
    sys.argv = [path, *request.argv[1:]]
    main = _fresh_main(path)
    main.__loader__ = _ScriptLoader(source)  # type: ignore[assignment]
    return _guarded(lambda: exec(code, main.__dict__), context)


def _fresh_main(path: Optional[str]) -> types.ModuleType:
    """A new ``__main__`` module (the boot script's stays alive only in its own frame)."""
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    if path is not None:
        main.__file__ = path
    main.__cached__ = None  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    return main


# --- the interactive console ---------------------------------------------------------------------------
def banner(context: Context) -> str:
    impl = sys.implementation.name
    version = ".".join(str(v) for v in sys.version_info[:3])
    mode = f"hw ({context.tee})" if context.mode == "hw" else "sim"
    lines = [f"Citadel {__version__}: Python {version} ({impl}) inside the protected engine, mode {mode}"]
    if context.mode == "sim":
        lines.append(SIMULATION_NOTICE[0].upper() + SIMULATION_NOTICE[1:] + ".")
    lines.append(f"Engine measurement: {context.measurement}")
    if context.image is not None:
        lines.append(f"Image: {context.image.tag} ({context.image.root})")
    else:
        lines.append("Image: none (the trusted base only: standard library and cryptography)")
    lines.append('Type "help", "copyright", "credits" or "license" for more information.')
    return "\n".join(lines)


def _console(request: LaunchRequest, context: Context) -> None:
    import code
    import site

    site.setquit()
    site.setcopyright()
    site.sethelper()
    sys.argv = ["", *request.argv[1:]]
    main = _fresh_main(None)
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            import readline
            import rlcompleter  # noqa: F401 - registers tab completion

            readline.parse_and_bind("tab: complete")
        except ImportError:
            pass

    class EngineConsole(code.InteractiveConsole):
        def showtraceback(self) -> None:
            exc = sys.exc_info()[1]
            if isinstance(exc, CitadelError):
                self.write(exc.diagnostics() + "\n")
            elif isinstance(exc, MemoryError):
                super().showtraceback()
                self.write(_heap_message(context.heap)[1] + "\n")
            else:
                super().showtraceback()

    EngineConsole(locals=main.__dict__).interact(banner=banner(context), exitmsg="")


# --- how the program ended ---------------------------------------------------------------------------
def _guarded(body: Callable[[], Any], context: Context) -> int:
    """Run ``body`` as the program and map its end to an exit status (see the module docstring)."""
    try:
        body()
    except SystemExit as exc:
        return _system_exit_status(exc)
    except MemoryError:
        cause, remedy = _heap_message(context.heap)
        _write(f"citadel: error: {cause}\ncitadel: hint: {remedy}\n")
        return exits.EXIT_HEAP
    except CitadelError as exc:
        where = _program_location(exc.__traceback__, context)
        cause = exc.diagnostics()
        if where:
            head, _, rest = cause.partition("\n")
            cause = f"{head} ({where})" + (f"\n{rest}" if rest else "")
        _write(cause + "\n")
        if context.volumes is not None:
            context.volumes.reported(exc)  # the exit commit does not print a failed volume's error again
        return exits.exit_code_for(exc)
    except KeyboardInterrupt as exc:
        _print_traceback(exc)
        return exits.EXIT_INTERRUPTED
    except BaseException as exc:  # the program's own uncaught exception: a traceback, like python
        _print_traceback(exc)
        if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc) and context.heap:
            _write("citadel: hint: thread stacks count toward CITADEL_HEAP; raise it, or lower CITADEL_STACK "
                   "(e.g. CITADEL_STACK=1M)\n")
        return exits.EXIT_PROGRAM_ERROR
    return exits.EXIT_OK


def _heap_message(heap: Optional[int]) -> Tuple[str, str]:
    if heap:
        size = format_size(heap)
        bigger = format_size(max(heap * 4, 512 << 20))
        return (f"the program ran out of heap (CITADEL_HEAP={size})",
                f"raise CITADEL_HEAP, e.g. CITADEL_HEAP={bigger}")
    return ("the program ran out of memory",
            "give the machine more memory, or make the program use less; CITADEL_HEAP sets a limit per run")


def _system_exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    _write(f"{code}\n")
    return 1


def _engine_frame(filename: str) -> bool:
    here = os.path.dirname(os.path.abspath(__file__))
    return filename.startswith(here + os.sep) or filename in ("<frozen runpy>",) or filename.endswith("/runpy.py")


def _trimmed(tb: Optional[types.TracebackType]) -> Optional[types.TracebackType]:
    """The traceback without the engine's own frames in front (python shows only the program's)."""
    while tb is not None and _engine_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def _print_traceback(exc: BaseException) -> None:
    """What python prints for an uncaught exception, through sys.excepthook (the program may set it)."""
    tb = _trimmed(exc.__traceback__)
    exc.__traceback__ = tb  # the default hook prints the exception's own traceback
    try:
        sys.excepthook(type(exc), exc, tb)
    except Exception:  # the outermost frame: a broken excepthook must not hide the original error
        import traceback

        traceback.print_exception(type(exc), exc, tb)
    _flush()


def _program_location(tb: Optional[types.TracebackType], context: Context) -> str:
    """"app.py line 3": the innermost frame of the program (inside the image) where it happened."""
    if context.image is None:
        return ""
    found = ""
    while tb is not None:
        rel = context.image.relpath(tb.tb_frame.f_code.co_filename)
        if rel:
            found = f"at {rel} line {tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _write(text: str) -> None:
    _flush()
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        log.debug("stderr is gone; the exit status carries the error")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
