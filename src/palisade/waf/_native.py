"""The WAF's hot modules compiled to C with mypyc, used when a build matches the sources.

``make native`` (:func:`build`) compiles :data:`MODULES` (the engine's evaluation
loop, rule model, macros, transformations, operators and literal pre-filter) with mypyc into
``<root>/<digest>/``, where ``root`` is ``$PALISADE_NATIVE_DIR`` or ``.native`` at the top of
a source checkout and ``digest`` hashes the interpreter's tag and the modules' sources. On
import, :func:`activate` puts that directory in front of the package's ``__path__`` when it
exists, so a build made from other sources is never loaded: after an edit the pure-Python
modules run until the next build. ``PALISADE_WAF_NATIVE=0`` turns the compiled modules off.

The compiled code is the same source; mypyc only makes its attribute accesses and calls
cheaper (the CRS's benign GET: about 2× faster evaluation on this machine).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# _http and _body stay plain Python: mypyc 2.4.1 raises SystemError where a bytes slice ends
# before it starts (Python gives b""), and their parsers slice bytes at computed offsets.
MODULES = ("_engine", "_rules", "_macros", "_transforms", "_prefilter", "_operators")
_PACKAGE_DIR = Path(__file__).resolve().parent


def source_digest() -> str:
    digest = hashlib.sha256(sys.implementation.cache_tag.encode())
    for name in MODULES:
        digest.update(name.encode())
        digest.update((_PACKAGE_DIR / f"{name}.py").read_bytes())
    return digest.hexdigest()[:20]


def native_root() -> Path:
    configured = os.environ.get("PALISADE_NATIVE_DIR")
    if configured:
        return Path(configured)
    return _PACKAGE_DIR.parents[2] / ".native"  # src/palisade/waf → the checkout


def build_dir() -> Path:
    return native_root() / source_digest()


def activate(package_path: list[str]) -> bool:
    """Use the compiled modules if a build of these exact sources exists."""
    if os.environ.get("PALISADE_WAF_NATIVE", "1") == "0":
        return False
    try:
        built = build_dir()
    except OSError:
        return False
    modules = built / "palisade" / "waf"
    if not (built / "complete").is_file():
        return False
    if str(built) not in sys.path:
        sys.path.append(str(built))  # mypyc's shared library for the group lives at the top
    package_path.insert(0, str(modules))
    return True


def active() -> bool:
    """Whether the engine module in use is the compiled one."""
    from . import _engine

    return not str(_engine.__file__).endswith(".py")


def build(*, quiet: bool = False) -> Path:
    """Compile the modules (nothing to do when a build of these sources exists)."""
    target = build_dir()
    if (target / "complete").is_file():
        return target
    source_root = _PACKAGE_DIR.parents[1]  # the directory holding the palisade package
    config = source_root.parent / "pyproject.toml"
    with tempfile.TemporaryDirectory(prefix="palisade-native.") as tmp:
        work = Path(tmp)
        shutil.copytree(
            source_root / "palisade", work / "palisade", ignore=shutil.ignore_patterns("*.so")
        )
        command = [sys.executable, "-m", "mypyc"]
        if config.is_file():
            command += ["--config-file", str(config)]
        command += [f"palisade/waf/{name}.py" for name in MODULES]
        done = subprocess.run(
            command, cwd=work, capture_output=True, text=True, env={**os.environ, "MYPYPATH": ""}
        )
        if done.returncode != 0:
            raise RuntimeError(f"mypyc failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=_ensure(target.parent)))
        (staging / "palisade" / "waf").mkdir(parents=True)
        for library in work.glob("*.so"):
            shutil.move(library, staging / library.name)
        for name in MODULES:
            for library in (work / "palisade" / "waf").glob(f"{name}.*.so"):
                shutil.move(library, staging / "palisade" / "waf" / library.name)
        (staging / "complete").write_text(" ".join(MODULES) + "\n")
        if target.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    for old in target.parent.iterdir():  # builds of earlier sources
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    if not quiet:
        print(f"WAF native modules built in {target}")
    return target


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["build"]:
        try:
            build()
        except (RuntimeError, OSError) as exc:
            print(f"palisade: cannot build the WAF's native modules: {exc}", file=sys.stderr)
            return 1
        return 0
    if args[:1] == ["status"]:
        print(f"{build_dir()} {'active' if active() else 'not active'}")
        return 0
    print("usage: main(['build']) or main(['status'])", file=sys.stderr)
    return 2
