"""The committed gRPC stubs are what generate_stubs.py makes from proto/ today."""

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_stubs", HERE.parent / "generate_stubs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_stubs"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto(tmp_path):
    gen = load_generator()
    from importlib.metadata import version

    assert version("grpcio-tools") == gen.GRPCIO_TOOLS, (
        f"the stubs are generated with grpcio-tools {gen.GRPCIO_TOOLS}: install that version"
    )
    fresh = gen.generate(tmp_path)
    committed_dir = HERE.parent / "src" / "scitq" / "v1"
    stale = [name for name, data in fresh.items() if (committed_dir / name).read_bytes() != data]
    assert not stale, (
        f"stale stubs {stale}: proto/ changed; run `python python/generate_stubs.py` and commit"
    )
