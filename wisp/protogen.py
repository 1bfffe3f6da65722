"""Generate the Python stubs of the contracts in ``proto/wisp/v1`` into ``wisp/v1``.

``python -m wisp.protogen`` regenerates the committed stubs; ``python -m wisp.protogen --check`` only
compares and exits 1, listing every stub that differs from what the ``.proto`` files give (changed,
missing or stale). Stubs are made with the pinned ``grpcio-tools`` (its bundled ``protoc``), so the
output is reproducible for a given lock file.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("wisp") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The contract files, sorted, as paths relative to ``proto_root``."""
    return sorted(p.relative_to(proto_root) for p in (proto_root / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every contract into ``out_root/wisp/v1``; return the generated files (relative to out_root).

    Raises :class:`RuntimeError` with protoc's exit status when compilation fails (protoc has already
    printed the reason on stderr).
    """
    files = proto_files(proto_root)
    if not files:
        raise RuntimeError(f"no .proto files under {proto_root / PACKAGE_DIR}")
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(f) for f in files),
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status}")
    return generated_files(out_root)


def generated_files(root: Path) -> list[Path]:
    """Generated stubs present under ``root/wisp/v1``, relative to ``root``, sorted."""
    directory = root / PACKAGE_DIR
    found = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)]
    return sorted(p.relative_to(root) for p in found)


def drift(repo_root: Path = ROOT) -> list[str]:
    """Regenerate into a temporary directory and describe every committed stub that differs."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wisp-protogen-") as tmp:
        fresh_root = Path(tmp)
        (fresh_root / PACKAGE_DIR).mkdir(parents=True)
        fresh = set(generate(fresh_root, repo_root / "proto"))
        committed = set(generated_files(repo_root)) if (repo_root / PACKAGE_DIR).is_dir() else set()
        for rel in sorted(fresh | committed):
            if rel not in committed:
                problems.append(f"{rel}: missing (run `python -m wisp.protogen`)")
            elif rel not in fresh:
                problems.append(f"{rel}: stale (no .proto generates it any more; delete it)")
            elif not filecmp.cmp(fresh_root / rel, repo_root / rel, shallow=False):
                problems.append(f"{rel}: differs from its .proto (run `python -m wisp.protogen`)")
    return problems


def regenerate(repo_root: Path = ROOT) -> list[Path]:
    """Rewrite the committed stubs in place, deleting stale ones; return the files written."""
    target = repo_root / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for old in generated_files(repo_root):
        (repo_root / old).unlink()
    init = target / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf/gRPC stubs of the Wisp contracts (see proto/wisp/v1)."""\n')
    return generate(repo_root, repo_root / "proto")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m wisp.protogen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        problems = drift()
        for line in problems:
            print(line)
        if problems:
            print(f"{len(problems)} generated file(s) out of date", file=sys.stderr)
            return 1
        print("generated stubs are up to date")
        return 0
    for rel in regenerate():
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
