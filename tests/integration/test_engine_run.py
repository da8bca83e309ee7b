"""The engine as a real process: it runs sealed scripts, modules, commands and a console like python
does, passes the program's exit status through, and turns every engine failure into two lines."""

from __future__ import annotations

from pathlib import Path

from tests.integration import engine_harness
from tests.integration.engine_harness import (
    launch,
    request,
    sealed_app,
    two_line_error,
)

engine_cache = engine_harness.engine_cache  # fixtures shared by the engine tests
settings = engine_harness.settings

HELLO = {"hello.py": 'print("hello world")\n'}


def test_sealed_hello_world_prints_and_exits_zero(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, HELLO)
    result = launch(request(image=image, argv=["hello.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello world\n"
    assert result.stderr == ""


def test_script_sees_its_arguments_file_and_sibling_modules(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {
        "app/main.py": """
            import os, sys
            import helper
            print(helper.greet(sys.argv[1:]))
            print(os.path.basename(__file__), __name__, os.path.basename(sys.argv[0]))
        """,
        "app/helper.py": "def greet(args):\n    return 'hi ' + ' '.join(args)\n",
    })
    result = launch(request(image=image, argv=["app/main.py", "a", "b c"], cwd=tmp_path), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hi a b c", "main.py __main__ main.py"]


def test_program_exit_status_passes_through(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"exit.py": "import sys\nsys.exit(3)\n", "msg.py": "raise SystemExit('bye')\n"})
    assert launch(request(image=image, argv=["exit.py"]), settings).returncode == 3
    result = launch(request(image=image, argv=["msg.py"]), settings)
    assert (result.returncode, result.stderr) == (1, "bye\n")


def test_uncaught_program_exception_prints_only_the_programs_traceback(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"boom.py": "def f():\n    raise ValueError('boom')\n\nf()\n"})
    result = launch(request(image=image, argv=["boom.py"]), settings)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'boom.py", line 4, in <module>' in lines[1]
    assert "    f()" in lines  # the source line: tracebacks read the sealed, verified source
    assert lines[-1] == "ValueError: boom"
    assert "citadel/engine" not in result.stderr


def test_module_runs_like_python_dash_m(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {
        "tool/__init__.py": "",
        "tool/__main__.py": "import sys\nprint('tool', __name__, sys.argv[1:])\n",
    })
    result = launch(request(image=image, module="tool", argv=["tool", "x"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tool __main__ ['x']\n"


def test_standard_library_module_runs_without_an_image(settings: dict) -> None:
    result = launch(request(module="json.tool"), settings, stdin='{"b": 1, "a": [1, 2]}')
    assert result.returncode == 0, result.stderr
    assert '"b": 1' in result.stdout


def test_interactive_console_states_mode_and_measurement(settings: dict) -> None:
    result = launch(request(interactive=True), settings, stdin="print(6 * 7)\nimport sys; sys.exit(5)\n")
    assert result.returncode == 5, result.stderr
    assert "42" in result.stdout
    banner = result.stderr
    assert "mode sim" in banner
    assert "memory is not protected from this machine's administrator" in banner
    assert "Engine measurement: " in banner
    assert "Image: none" in banner


def test_interactive_console_with_an_image_names_its_tag(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, {"lib.py": "VALUE = 'sealed'\n"})
    result = launch(request(image=image, interactive=True), settings, stdin="import lib; print(lib.VALUE)\n")
    assert result.returncode == 0, result.stderr
    assert "sealed" in result.stdout
    tag = (image / ".citadel" / "manifest").read_bytes()
    import hashlib

    assert f"Image: {hashlib.sha256(tag).hexdigest()}" in result.stderr


def test_code_on_host_paths_is_refused(tmp_path: Path, settings: dict) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "planted.py").write_text("print('unverified code ran')\n")
    image = sealed_app(tmp_path, {"main.py": f"""
        import sys
        sys.path.append({str(host)!r})
        try:
            import planted
        except ImportError as exc:
            print("refused:", exc)
    """})
    result = launch(request(image=image, argv=["main.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert "unverified code ran" not in result.stdout
    assert "refused: refusing to import 'planted'" in result.stdout
    assert "neither sealed in the image nor part of the measured engine" in result.stdout


def test_script_that_is_not_sealed_is_a_usage_error(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, HELLO)
    result = launch(request(image=image, argv=["missing.py"]), settings)
    assert result.returncode == 64
    cause, remedy = two_line_error(result)
    assert "'missing.py' is not a sealed file of the image" in cause


def test_wrong_key_is_an_image_error(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, HELLO)
    result = launch(request(image=image, argv=["hello.py"], key=bytes(32)), settings)
    assert result.returncode == 65
    cause, _ = two_line_error(result)
    assert "the key does not open this image" in cause


def test_engine_without_a_launch_request_explains_itself(settings: dict) -> None:
    result = launch(None, settings)
    assert result.returncode == 64
    cause, remedy = two_line_error(result)
    assert "without a launch request" in cause
    assert "citadel run" in remedy


def test_malformed_launch_request_is_a_usage_error(settings: dict) -> None:
    result = launch(None, settings, raw_request=b"{not json")
    assert result.returncode == 64
    assert "not valid JSON" in two_line_error(result)[0]


def test_bad_setting_names_the_variable_and_an_example(settings: dict) -> None:
    result = launch(request(interactive=True), {**settings, "CITADEL_HEAP": "12X"})
    assert result.returncode == 64
    cause, remedy = two_line_error(result)
    assert cause == "CITADEL_HEAP='12X' is not a size"
    assert remedy == "use a number with K, M or G, e.g. CITADEL_HEAP=256M"


def test_version_prints_settings_mode_measurement_and_image_tag(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, HELLO)
    result = launch(request(image=image, argv=["hello.py"]), {**settings, "CITADEL_VERSION": "1",
                                                               "CITADEL_HEAP": "256M"})
    assert result.returncode == 0, result.stderr
    err = result.stderr
    for expected in ("citadel: version: citadel ", "citadel: CITADEL_MODE=sim", "citadel: CITADEL_HEAP=256M",
                     "citadel: CITADEL_STACK=default", "citadel: CITADEL_ALLOW_DLOPEN=0", "citadel: CITADEL_LOG=",
                     "citadel: simulation mode:", "citadel: engine manifest: sha256 ", "citadel: measurement: ",
                     "citadel: image: "):
        assert expected in err, (expected, err)
    assert result.stdout == "hello world\n"


def test_auto_mode_without_a_tee_falls_back_to_sim_with_one_warning(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, HELLO)
    empty_root = tmp_path / "no-tee"
    empty_root.mkdir()
    result = launch(request(image=image, argv=["hello.py"]),
                    {**settings, "CITADEL_MODE": "auto", "CITADEL_TEE_ROOT": str(empty_root)})
    assert result.returncode == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("citadel: warning: no trusted execution environment found")
    assert "simulation mode" in warnings[0]


def test_hw_mode_without_a_tee_lists_what_it_checked(tmp_path: Path, settings: dict) -> None:
    image = sealed_app(tmp_path, HELLO)
    empty_root = tmp_path / "no-tee"
    empty_root.mkdir()
    for root in (None, str(empty_root)):  # this machine has no TEE; the empty tree has none either
        env = {**settings, "CITADEL_MODE": "hw"}
        if root:
            env["CITADEL_TEE_ROOT"] = root
        result = launch(request(image=image, argv=["hello.py"]), env)
        assert result.returncode == 69
        cause, remedy = two_line_error(result)
        for checked in ("/dev/attestation", "/sys/kernel/config/tsm/report", "/dev/tdx_guest", "/dev/sev-guest",
                        "/dev/tpmrm0"):
            assert checked in cause
        assert "CITADEL_MODE=auto" in remedy
        assert result.stdout == ""


def test_hw_mode_with_a_tee_verifies_everything_and_runs(tmp_path: Path, settings: dict) -> None:
    """A (fake) TPM makes hw mode start: full hashes, extension modules from memfds."""
    image = sealed_app(tmp_path, {"check.py": """
        import sys
        rust = sys.modules["cryptography.hazmat.bindings._rust"]
        print(rust.__file__.endswith("_rust.abi3.so"))
        maps = open("/proc/self/maps").read()
        print("/memfd:cryptography.hazmat.bindings._rust" in maps)
    """})
    tee_root = tmp_path / "tee"
    (tee_root / "dev").mkdir(parents=True)
    (tee_root / "dev" / "tpmrm0").write_bytes(b"")
    result = launch(request(image=image, argv=["check.py"]),
                    {**settings, "CITADEL_MODE": "hw", "CITADEL_TEE_ROOT": str(tee_root), "CITADEL_VERSION": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
    assert "citadel: CITADEL_MODE=hw (tpm)" in result.stderr
    assert "simulation mode" not in result.stderr


def test_standard_library_packages_loaded_before_boot_serve_their_submodules(tmp_path: Path, settings: dict) -> None:
    """encodings was imported by the interpreter itself; its codecs still load, verified, later."""
    image = sealed_app(tmp_path, {"codecs_use.py": """
        import sys
        print("é".encode("cp1252"), "bücher.example".encode("idna"))
        print(sys.modules["encodings.cp1252"].__spec__.loader.__class__.__name__)
    """})
    result = launch(request(image=image, argv=["codecs_use.py"]), settings)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["b'\\xe9' b'xn--bcher-kva.example'", "TrustedSourceLoader"]
