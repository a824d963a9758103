"""What the GitHub Action installs, as a digest: the key of its cached virtual environment and work directory.

Shipped with the composite action (action.yml) and run by the runner's Python before anything is installed,
so it uses the standard library only. Usage:

    python scripts/action_env.py key ACTION_PATH      # prints the install key
    python scripts/action_env.py matches ACTION_PATH  # exit 0 when this interpreter's zhprune_hub is ACTION_PATH's

The key digests the checkout's package files (every .py and template under zhprune_hub/, symlinks
followed), pyproject.toml, constraints.txt, and the interpreter (version, implementation, platform):
an edited checkout, a new constraint or another Python gets a fresh environment, whatever `__version__`
says. `matches` compares the package files an interpreter imports with the checkout's, so a Python that
already has this very code installed (editable or not) is used as it is.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

PACKAGE = "zhprune_hub"
PACKAGE_SUFFIXES = (".py", ".j2")
INSTALL_FILES = ("pyproject.toml", "constraints.txt")


def package_files(package_dir: Path) -> dict[str, bytes]:
    """The package's code and templates by relative path (what a wheel of it installs)."""
    found: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(package_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(PACKAGE_SUFFIXES) or name == "py.typed":
                path = Path(folder) / name
                found[path.relative_to(package_dir).as_posix()] = path.read_bytes()
    return found


def _digest(files: dict[str, bytes]) -> hashlib._Hash:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return digest


def package_digest(package_dir: Path) -> str:
    return _digest(package_files(package_dir)).hexdigest()


def install_key(action_path: Path) -> str:
    """24 hex digits over the checkout's package files, install metadata and this interpreter."""
    files = {f"{PACKAGE}/{rel}": data for rel, data in package_files(action_path / PACKAGE).items()}
    for name in INSTALL_FILES:
        path = action_path / name
        files[name] = path.read_bytes() if path.is_file() else b""
    interpreter = f"{platform.python_implementation()} {sys.version} {platform.machine()} {sys.abiflags}"
    files["<python>"] = interpreter.encode()
    return _digest(files).hexdigest()[:24]


def installed_matches(action_path: Path) -> bool:
    """Whether this interpreter imports a zhprune_hub whose files equal the checkout's."""
    try:
        import zhprune_hub
    except ImportError:
        return False
    return package_digest(Path(zhprune_hub.__file__).resolve().parent) == package_digest(action_path / PACKAGE)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"key", "matches"}:
        print("usage: action_env.py key|matches ACTION_PATH", file=sys.stderr)
        return 2
    action_path = Path(argv[1]).resolve()
    if argv[0] == "key":
        print(install_key(action_path))
        return 0
    return 0 if installed_matches(action_path) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
