"""Regenerate jobscheduler/_generated from proto/ (``task proto:generate``).

Usage: python tools/generate_proto.py [OUT_ROOT]

OUT_ROOT defaults to the repository root; the staleness test passes a
temporary directory and compares the result with what is committed.
"""

from __future__ import annotations

import pathlib
import shutil
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "jobscheduler/_generated"
PROTOS = ["jobscheduler.proto"]


def generate(out_root: pathlib.Path) -> list[pathlib.Path]:
    out_dir = out_root / PACKAGE
    out_dir.mkdir(parents=True, exist_ok=True)
    plugin_dir = pathlib.Path(sys.executable).parent
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PACKAGE}={ROOT / 'proto'}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=str(plugin_dir))}",
        f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=str(plugin_dir))}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *(f"{PACKAGE}/{name}" for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    init = out_dir / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC code. Do not edit: run `task proto:generate`."""\n')
    # The .proto itself ships inside the package too (jobscheduler/proto/), for stubs in any language.
    shipped = out_root / "jobscheduler" / "proto"
    shipped.mkdir(parents=True, exist_ok=True)
    for name in PROTOS:
        shutil.copyfile(ROOT / "proto" / name, shipped / name)
    return sorted(p for p in out_dir.iterdir() if p.is_file())


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(target):
        print(path.relative_to(target))
