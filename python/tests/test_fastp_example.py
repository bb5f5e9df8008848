"""The seed's fastp example runs unchanged but for the server address: its image is built
locally (busybox and a stand-in `fastp`), its `s3://mybucket` is a loopback S3 server (moto)
behind the rclone remote named `s3` as in the seed, and ENA's answers are recorded ones
served on loopback, FASTQ files included."""

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from cluster import REPO, Cluster, Proc, clean_env, wait_for
from scitq.lib import Server

HERE = Path(__file__).resolve().parent
IMAGE = "staphb/fastp:latest"
PROJECT = "PRJEB46098"
# A stand-in for fastp: reads FASTQ on stdin, writes it gzipped to --out1 and a report to
# --json, ignores its other options.
FAKE_FASTP = """#!/bin/sh
out=; json=
while [ $# -gt 0 ]; do
  case "$1" in --out1) out=$2; shift;; --json) json=$2; shift;; esac
  shift
done
cat > /tmp/reads.fq
gzip -c /tmp/reads.fq > "$out"
reads=$(( $(wc -l < /tmp/reads.fq) / 4 ))
echo "{\\"reads\\": $reads}" > "$json"
echo "fastp: $reads reads"
"""
# sample -> runs, each run with its reads.
RUNS = {"SAMEA9000001": {"ERR9000001": 2, "ERR9000002": 3}, "SAMEA9000002": {"ERR9000003": 1}}
S3_AUTH = ("AWS4-HMAC-SHA256 Credential=scitq-test/20260101/us-east-1/s3/aws4_request, "
           "SignedHeaders=host, Signature=0")


def fastq(run: str, reads: int) -> bytes:
    text = "".join(f"@{run}.{i}\nACGTACGT\n+\nIIIIIIII\n" for i in range(reads))
    return gzip.compress(text.encode(), mtime=0)


class Ena(BaseHTTPRequestHandler):
    port = 0
    files: dict = {}

    def do_HEAD(self):  # noqa: N802 - http.server's name
        data = Ena.files.get(urlparse(self.path).path.rsplit("/", 1)[1])
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlparse(self.path)
        if url.path.startswith("/vol1/"):
            data = Ena.files[url.path.rsplit("/", 1)[1]]
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes="):].partition("-")
                end = int(last) + 1 if last else len(data)
                part = data[int(first or 0):end]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first or 0}-{end - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                self.wfile.write(part)
                return None
            return self.answer(200, data)
        query = parse_qs(url.query)
        accession, fields = query["accession"][0], query["fields"][0]
        if "fastq_ftp" in fields:  # the agent asks for one run's files
            lines = ["run_accession\tfastq_ftp\tfastq_md5\tfastq_bytes"]
            name = f"{accession}.fastq.gz"
            if name in Ena.files:
                data = Ena.files[name]
                lines.append(f"{accession}\t127.0.0.1:{Ena.port}/vol1/{name}\t"
                             f"{hashlib.md5(data).hexdigest()}\t{len(data)}")
            return self.answer(200, ("\n".join(lines) + "\n").encode())
        if accession != PROJECT:
            return self.answer(404, b"unknown project\n")
        lines = ["run_accession\tsample_accession\tsecondary_sample_accession\tlibrary_layout"
                 "\tread_count\tbase_count\tfastq_bytes"]
        for sample, runs in RUNS.items():
            for run, reads in runs.items():
                size = len(Ena.files[f"{run}.fastq.gz"])
                lines.append(f"{run}\t{sample}\t\tSINGLE\t{reads}\t{reads * 8}\t{size}")
        return self.answer(200, ("\n".join(lines) + "\n").encode())

    def answer(self, status, data):
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def ena():
    Ena.files = {f"{run}.fastq.gz": fastq(run, n) for runs in RUNS.values()
                 for run, n in runs.items()}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ena)
    Ena.port = httpd.server_port
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/filereport"
    httpd.shutdown()


@pytest.fixture
def fastp_image(tmp_path):
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("the Docker daemon is not reachable: the fastp example runs in a container")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        pytest.skip(f"{IMAGE} exists on this machine: the test will not replace it")
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    for folder in ("etc", "root", "tmp", "usr"):
        (root / folder).mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "bin" / "fastp").write_text(FAKE_FASTP)
    (root / "bin" / "fastp").chmod(0o755)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, check=True,
                   capture_output=True)
    tar.wait()
    yield IMAGE
    subprocess.run(["docker", "rmi", "--force", IMAGE], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_request(port: int, method: str, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     headers={"Authorization": S3_AUTH})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def s3(tmp_path):
    """moto's S3 server on loopback with the bucket `mybucket`."""
    moto = os.environ.get("MOTO_SERVER") or str(REPO / "target/test-tools/venv/bin/moto_server")
    if not Path(moto).is_file():
        pytest.fail(f"moto_server not found at {moto}: set MOTO_SERVER (scripts/test installs it)")
    port = free_port()
    proc = Proc("moto_server", [moto, "-H", "127.0.0.1", "-p", str(port)],
                clean_env(tmp_path), tmp_path / "moto.log")
    try:
        wait_for("moto to answer", lambda: s3_request(port, "GET", "/")[0] == 200)
        assert s3_request(port, "PUT", "/mybucket")[0] == 200
        yield port
    finally:
        proc.stop()


def attempts(cluster: Cluster) -> list:
    """Each attempt's status, failure class and message: what went wrong, when it did."""
    s = Server(cluster.addr, token=cluster.token)
    return [(t["name"], e["status"], e["failure"], e["message"])
            for t in s.tasks() for e in s.executions(task_id=t, output=False)]


def test_the_seeds_fastp_example_runs_unchanged(tmp_path, ena, fastp_image, s3, request):
    rclone = tmp_path / "rclone.conf"
    rclone.write_text(
        f"[s3]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{s3}\n"
        f"region = us-east-1\naccess_key_id = scitq-test\nsecret_access_key = scitq-test-secret\n")
    cluster = Cluster(tmp_path / "cluster", concurrency=2,
                      scitqd_args=("--rclone-config", str(rclone)))
    try:
        # The same S3 server also through the agent's built-in s3:// (environment
        # credentials): today a built-in scheme wins over an rclone remote of the same name.
        cluster.start_agent("fastp", env={
            "SCITQ_ENA_URL": ena, "SCITQ_ENA_FASTQ_SCHEME": "http",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}", "AWS_ACCESS_KEY_ID": "scitq-test",
            "AWS_SECRET_ACCESS_KEY": "scitq-test-secret", "AWS_REGION": "us-east-1"})
        script = (HERE / "data" / "scitq-fastp.py").read_text()
        assert script.count("Server('127.0.0.1')") == 1
        copy = tmp_path / "scitq-fastp.py"
        copy.write_text(script.replace("Server('127.0.0.1')", f"Server({cluster.addr!r})"))
        env = {**os.environ, "SCITQ_TOKEN": cluster.token, "SCITQ_ENA_URL": ena}
        run = subprocess.run([sys.executable, str(copy), PROJECT], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{cluster.logs()}"
        for sample, runs in RUNS.items():
            prefix = f"/mybucket/myresults/{PROJECT}/{sample}"
            status, report = s3_request(s3, "GET", f"{prefix}/{sample}-fastp.json")
            assert status == 200, attempts(cluster)
            assert report == f'{{"reads": {sum(runs.values())}}}\n'.encode()
            status, cleaned = s3_request(s3, "GET", f"{prefix}/{sample}.fastq.gz")
            assert status == 200
            expected = b"".join(gzip.decompress(fastq(r, n)) for r, n in sorted(runs.items()))
            assert gzip.decompress(cleaned) == expected
        s = Server(cluster.addr, token=cluster.token)
        outputs = sorted(s.task_output(t["task_id"]) for t in s.tasks(status="succeeded"))
        assert outputs == ["fastp: 1 reads\n", "fastp: 5 reads\n"], attempts(cluster)
        assert len(attempts(cluster)) == 2, "one attempt per sample, no retry needed"
    finally:
        if request.session.testsfailed:
            print(cluster.logs())
        cluster.stop()
