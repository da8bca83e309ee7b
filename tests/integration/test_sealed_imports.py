"""Sealed code imports and runs exactly as unsealed: packages, namespace packages, relative imports,
bytecode, resources, pkgutil, metadata, tracebacks with source lines; unprotected and tampered code
never runs."""

from __future__ import annotations

import json
import py_compile
from pathlib import Path

import pytest

from citadel.seal.format import UNPROTECTED
from tests.integration.engine_shields_harness import (
    engine_code,
    normalised,
    python,
    run_sealed,
    run_unsealed,
    seal,
    seal_files_directly,
    trusted_site,
    write_tree,
)

MAIN = """
import importlib
import importlib.metadata
import importlib.resources
import inspect
import io
import json
import os
import pathlib
import pkgutil
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))

def rel(p):
    return os.path.relpath(str(p), HERE) if p else p

import shop
from shop import cart
from shop.sub import deep
import nsp.plugin_a
import legacy

print("total", cart.Cart(["apple", "pear"]).total())
print("file", rel(shop.__file__), rel(cart.__file__), rel(deep.__file__))
print("spec", shop.__spec__.name, shop.__spec__.parent, deep.__spec__.parent, rel(shop.__spec__.origin))
print("package", cart.__package__, deep.__package__, shop.__package__)
print("path", [rel(p) for p in shop.__path__])
print("namespace", [rel(p) for p in nsp.__path__], nsp.__file__, nsp.__spec__.origin, nsp.plugin_a.NAME)
print("legacy", legacy.VALUE, rel(legacy.__file__), legacy.__spec__.loader.get_source("legacy"))
print("loader source", shop.__loader__.get_source("shop").strip().splitlines()[0])
print("relative", deep.explain())

data = os.path.join(HERE, "data", "prices.json")
with open(data) as fh:
    print("open", json.load(fh))
with open(data, "rb", buffering=0) as fh:
    print("open rb0", fh.read(11), type(fh).__name__, rel(fh.name))
with io.open(data, encoding="utf-8", newline="") as fh:
    print("io.open", fh.readline().rstrip(), rel(fh.name))
print("pathlib", pathlib.Path(data).read_text()[:11], pathlib.Path(data).stat().st_size)
print("getsize", os.path.getsize(data), os.path.exists(data), os.path.isfile(data))
print("glob", sorted(p.name for p in pathlib.Path(HERE, "data").glob("*.json")))

files = importlib.resources.files("shop")
print("resources", files.joinpath("catalog.txt").read_text().strip(), (files / "catalog.txt").is_file())
with importlib.resources.as_file(files / "catalog.txt") as p:
    print("as_file", rel(p), open(p).read().strip())
print("get_data", pkgutil.get_data("shop", "catalog.txt"))
print("iter_modules", sorted((m.name, m.ispkg) for m in pkgutil.iter_modules(shop.__path__)))
print("walk", sorted(m.name for m in pkgutil.walk_packages(shop.__path__, "shop.")))
print("top", sorted(m.name for m in pkgutil.iter_modules([HERE])))
print("metadata", importlib.metadata.version("shopdist"), importlib.metadata.metadata("shopdist")["Summary"])
print("inspect", inspect.getsource(deep.explain).splitlines()[0])

try:
    shop.boom()
except ValueError:
    print(traceback.format_exc())
try:
    import shop.broken
except ZeroDivisionError:
    print(traceback.format_exc())
"""

APP = {
    "main.py": MAIN,
    "shop/__init__.py": '''
        """The shop."""
        from .cart import Cart

        def boom():
            from .sub.deep import explode
            explode("boom")
        ''',
    "shop/cart.py": """
        from . import pricing
        from .sub import deep as _deep


        class Cart:
            def __init__(self, items):
                self.items = items

            def total(self):
                return sum(pricing.price(i) for i in self.items)
        """,
    "shop/pricing.py": """
        PRICES = {"apple": 3, "pear": 4}


        def price(item):
            return PRICES[item]
        """,
    "shop/catalog.txt": "apples and pears\n",
    "shop/sub/__init__.py": "",
    "shop/sub/deep.py": '''
        # -*- coding: utf-8 -*-
        from ..pricing import price
        from .. import cart


        def explain():
            """Prices, explained."""
            return f"apple costs {price('apple')} ({cart.__name__})"


        def explode(word):
            value = price("pear")
            raise ValueError(f"{word}: pear costs {value} — ünïcode")
        ''',
    "shop/broken.py": """
        X = 1
        Y = X / 0
        """,
    "nsp/plugin_a.py": 'NAME = "plugin a"\n',
    "data/prices.json": '{"apple": 3, "pear": 4}\n',
    "data/other.json": "{}\n",
    "shopdist-1.0.dist-info/METADATA": ("Metadata-Version: 2.1\nName: shopdist\nVersion: 1.0\nSummary: a shop\n"),
    "shopdist-1.0.dist-info/RECORD": "",
    "legacy_src.py": "VALUE = 42\n",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trusted_site(tmp_path_factory.mktemp("trusted-site"))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = write_tree(tmp_path_factory.mktemp("app") / "src", APP)
    py_compile.compile(str(src / "legacy_src.py"), cfile=str(src / "legacy.pyc"), doraise=True)
    (src / "legacy_src.py").unlink()
    return src


@pytest.fixture(scope="module")
def image(app: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("img") / "image"
    key = seal(app, out, rules=[("shop/catalog.txt", "authenticated")])
    return out, key


def test_sealed_app_behaves_as_unsealed(app: Path, image: tuple[Path, str], site: Path) -> None:
    out, key = image
    unsealed = run_unsealed(app, "main.py")
    assert unsealed.returncode == 0, unsealed.stderr
    sealed = run_sealed(out, key, site, "main.py")
    assert sealed.returncode == 0, sealed.stderr
    assert normalised(sealed.stdout, out) == normalised(unsealed.stdout, app)
    # the comparison is only worth something if the run exercised what it claims to
    assert "total 7" in sealed.stdout
    assert 'raise ValueError(f"{word}: pear costs {value} — ünïcode")' in sealed.stdout
    assert "Y = X / 0" in sealed.stdout
    assert "citadel" not in sealed.stdout  # no engine frames in tracebacks
    assert not list(out.rglob("__pycache__")), "bytecode was written into the image"


def test_sealed_module_attributes(image: tuple[Path, str], site: Path) -> None:
    out, key = image
    body = """
        import json, sys
        import shop, shop.cart
        print(json.dumps({"cached": [shop.__cached__, shop.cart.__cached__, shop.__spec__.cached],
                          "dont_write": sys.dont_write_bytecode, "path0": sys.path[0],
                          "loader": type(shop.__loader__).__name__}))
        """
    done = python(engine_code(out, key, site, body=body))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "cached": [None, None, None],
        "dont_write": True,
        "path0": str(out.resolve()),
        "loader": "SealedSourceLoader",
    }


def test_entry_dir_comes_first_and_python_path_after_stdlib(tmp_path: Path, site: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        {
            "bin/run.py": "import colorsys, helper\nprint(colorsys.FLAG, helper.X)\n",
            "bin/colorsys.py": "FLAG = 'sealed colorsys shadows stdlib, like CPython'\n",
            "bin/helper.py": "X = 1\n",
        },
    )
    lib = write_tree(
        tmp_path / "lib",
        {"email.py": "raise SystemExit('a python-path module shadowed stdlib')\n", "extra.py": "Y = 2\n"},
    )
    key = seal(src, tmp_path / "img", python_paths=[lib])
    done = run_sealed(tmp_path / "img", key, site, "bin/run.py", entry_dir="bin")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "sealed colorsys shadows stdlib, like CPython 1\n"
    body = "import email.message, extra\nprint(extra.Y, email.__file__.startswith(sys.base_prefix))\n"
    done = python(engine_code(tmp_path / "img", key, site, entry_dir="bin", body=body))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 True\n"


def test_code_in_the_unprotected_region_is_refused(tmp_path: Path, site: Path) -> None:
    marker = tmp_path / "ran"
    src = write_tree(
        tmp_path / "src",
        {
            "main.py": "import plugins.evil\n",
            "plugins/__init__.py": "",
            "plugins/evil.py": f"open({str(marker)!r}, 'w').write('ran')\n",
        },
    )
    key = seal(src, tmp_path / "img", rules=[("plugins/evil.py", UNPROTECTED)])
    done = run_sealed(tmp_path / "img", key, site, "main.py")
    assert done.returncode != 0
    assert "refusing to import 'plugins.evil': 'plugins/evil.py' is in the image's unprotected region" in done.stderr
    assert not marker.exists()


def test_tampered_module_fails_naming_the_path_and_never_runs(tmp_path: Path, site: Path) -> None:
    marker = tmp_path / "ran"
    src = write_tree(tmp_path / "src", {"main.py": "import victim\n", "victim.py": "X = 1\n"})
    key = seal(src, tmp_path / "img", rules=[("victim.py", "authenticated")])
    (tmp_path / "img" / "victim.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    done = run_sealed(tmp_path / "img", key, site, "main.py")
    assert done.returncode != 0
    assert "TamperedImage" in done.stderr
    assert "sealed file 'victim.py' does not match its recorded SHA-256" in done.stderr
    assert not marker.exists()


def test_tampered_encrypted_module_fails(tmp_path: Path, site: Path) -> None:
    src = write_tree(tmp_path / "src", {"main.py": "import victim\n", "victim.py": "X = 1\n" * 100})
    key = seal(src, tmp_path / "img")
    victim = tmp_path / "img" / "victim.py"
    data = bytearray(victim.read_bytes())
    data[-20] ^= 1
    victim.write_bytes(bytes(data))
    done = run_sealed(tmp_path / "img", key, site, "main.py")
    assert done.returncode != 0
    assert "sealed file 'victim.py' failed authentication in chunk 0" in done.stderr


def test_sealed_bytecode_cache_is_used_when_it_matches(tmp_path: Path, site: Path) -> None:
    """A sealed __pycache__ pyc replaces compiling; a stale one (source changed) is ignored."""
    src = write_tree(tmp_path / "src", {"fresh.py": "WHERE = 'source'\n", "stale.py": "WHERE = 'source'\n"})
    cache = src / "__pycache__"
    for name in ("fresh", "stale"):
        py_compile.compile(
            str(src / f"{name}.py"),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
    # make the fresh pyc distinguishable: compile other code under the same source hash
    fresh_pyc = next(cache.glob("fresh.*.pyc"))
    header = fresh_pyc.read_bytes()[:16]
    import marshal

    fresh_pyc.write_bytes(header + marshal.dumps(compile("WHERE = 'pyc'\n", "x", "exec")))
    (src / "stale.py").write_text("WHERE = 'changed source'\n")
    out = tmp_path / "img"
    key = seal_files_directly(src, out)
    body = "import fresh, stale\nprint(fresh.WHERE, '|', stale.WHERE, '|', fresh.__spec__.cached)\n"
    done = python(engine_code(out, key, site, body=body))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "pyc | changed source | None\n"


def test_fork_child_imports_sealed_code(tmp_path: Path, site: Path) -> None:
    src = write_tree(tmp_path / "src", {"late.py": "import os\nprint('late import in', os.getpid())\n"})
    key = seal(src, tmp_path / "img")
    body = """
        import os
        pid = os.fork()
        if pid == 0:
            import late
            sys.stdout.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child", pid, "exit", os.waitstatus_to_exitcode(status))
        """
    done = python(engine_code(tmp_path / "img", key, site, body=body))
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    child = second.split()[1]
    assert (first, second) == (f"late import in {child}", f"child {child} exit 0")


def test_running_leaves_the_image_unchanged(tmp_path: Path, site: Path) -> None:
    """The run leaves the image exactly as it was (no bytecode, no temp files with plaintext)."""
    src = write_tree(tmp_path / "src", {"main.py": "import mod\nprint(mod.SECRET)\n", "mod.py": "SECRET = 'x' * 3\n"})
    key = seal(src, tmp_path / "img")
    before = sorted((p.relative_to(tmp_path / "img"), p.stat().st_size) for p in (tmp_path / "img").rglob("*"))
    done = run_sealed(tmp_path / "img", key, site, "main.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "xxx\n"
    after = sorted((p.relative_to(tmp_path / "img"), p.stat().st_size) for p in (tmp_path / "img").rglob("*"))
    assert before == after
    assert b"SECRET" not in (tmp_path / "img" / "mod.py").read_bytes()


def test_tracebacks_show_source_when_linecache_was_imported_before_the_shield(tmp_path: Path, site: Path) -> None:
    """The engine may import traceback/linecache/tokenize before installing the shields."""
    src = write_tree(tmp_path / "src", {"mod.py": "def fail():\n    raise KeyError('sealed line shown')\n"})
    key = seal(src, tmp_path / "img")
    code = "import traceback, linecache, tokenize\n" + engine_code(
        tmp_path / "img",
        key,
        site,
        body="""
        import mod
        try:
            mod.fail()
        except KeyError:
            print(traceback.format_exc())
        """,
    )
    done = python(code)
    assert done.returncode == 0, done.stderr
    assert "    raise KeyError('sealed line shown')\n" in done.stdout
