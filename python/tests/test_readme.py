"""Runs every Python example of python/README.md (and the workspace README) against the test cluster, with the server
address and storage URIs replaced by the test's own, and checks the output the README shows."""

import contextlib
import io
import re
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from test_genetics import Ena

README = Path(__file__).resolve().parents[1] / "README.md"
#: The workspace README has one Python example too.
ROOT_README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```\n(?:\s*```text\n(.*?)```\n)?", re.S)


def examples(recruiting: bool = False):
    """The examples; those that recruit on the local provider (run by test_recruit.py
    against a scitqd that has one) or all the others."""
    return [(code, shown) for path in (README, ROOT_README)
            for code, shown in BLOCK.findall(path.read_text())
            if ("provider='local'" in code) == recruiting]


def run_examples(found, addr: str, tmp_path: Path) -> None:
    for number, (code, shown) in enumerate(found, 1):
        code = code.replace("'127.0.0.1'", repr(addr))
        code = code.replace("s3://mybucket/", f"file://{tmp_path}/bucket/")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md example {number}", "exec"), {})
        if shown:
            assert out.getvalue() == shown, f"example {number}"


def test_the_readme_has_examples():
    assert len(examples()) >= 6


@pytest.fixture(scope="module")
def ena_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ena)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/project"
    httpd.shutdown()


def test_every_example_runs_and_prints_what_the_readme_shows(cluster, ena_url, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("SCITQ_TOKEN", cluster.token)
    monkeypatch.setenv("SCITQ_ENA_URL", ena_url)
    monkeypatch.chdir(tmp_path)
    run_examples(examples(), cluster.addr, tmp_path)
