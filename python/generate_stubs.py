#!/usr/bin/env python3
"""Generates the gRPC stubs of the scitq package from proto/ (the one source of the API).

Run from anywhere, with grpcio-tools at the pinned version installed:

    pip install grpcio-tools==1.85.4
    python python/generate_stubs.py

It writes src/scitq/v1/scitq_pb2.py, scitq_pb2.pyi and scitq_pb2_grpc.py; they are committed,
so installing the package needs no protoc. `tests/test_stubs.py` fails when they differ from
what this script generates (a proto change without regenerating).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

#: The generator version the committed stubs come from: another version writes other code
#: (and other runtime checks), so the staleness test compares like with like.
GRPCIO_TOOLS = "1.85.4"

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent / "proto" / "proto"
PROTO_FILE = "scitq/v1/scitq.proto"
PACKAGE_SRC = HERE / "src"
GENERATED = ("scitq_pb2.py", "scitq_pb2.pyi", "scitq_pb2_grpc.py")


def check_generator() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("grpcio-tools")
    except PackageNotFoundError:
        sys.exit(f"grpcio-tools is not installed: pip install grpcio-tools=={GRPCIO_TOOLS}")
    if found != GRPCIO_TOOLS:
        sys.exit(
            f"grpcio-tools {found} is installed, the stubs are generated with {GRPCIO_TOOLS}: "
            f"pip install grpcio-tools=={GRPCIO_TOOLS}"
        )


def generate(out_dir: Path) -> dict[str, bytes]:
    """Runs protoc into `out_dir` and returns the generated files by name."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO_FILE,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_ROOT / PROTO_FILE}")
    generated = out_dir / "scitq" / "v1"
    return {name: (generated / name).read_bytes() for name in GENERATED}


def main() -> None:
    check_generator()
    target = PACKAGE_SRC / "scitq" / "v1"
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
    for name, data in files.items():
        (target / name).write_bytes(data)
        print(f"wrote {target / name}")


if __name__ == "__main__":
    main()
