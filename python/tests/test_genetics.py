"""sra_get_samples against recorded ENA file reports served on loopback (SCITQ_ENA_URL)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from scitq.bio.genetics import EnaError, sra_get_samples

# ENA's answer for fields=run_accession,sample_accession,secondary_sample_accession,
# library_layout,read_count,base_count,fastq_bytes (the same record as tests/tests/ena.rs).
PROJECT_REPORT = (
    "run_accession\tsample_accession\tsecondary_sample_accession\tlibrary_layout\tread_count\tbase_count\tfastq_bytes\n"
    "ERR3258431\tSAMEA5622031\tERS3429437\tPAIRED\t25124837\t7537451100\t1658120339;1702519210\n"
    "ERR3258432\tSAMEA5622032\tERS3429438\tPAIRED\t19871002\t5961300600\t1310024812;1349850022\n"
    "ERR3258433\tSAMEA5622031\tERS3429437\tPAIRED\t1002\t300600\t131002;134985\n"
    "ERR3258434\tSAMEA5622033\tERS3429439\tSINGLE\t\t\t\n"
)
REPORTS = {
    "/project": PROJECT_REPORT,
    "/empty-project": PROJECT_REPORT.split("\n", 1)[0] + "\n",
}


class Ena(BaseHTTPRequestHandler):
    queries: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlparse(self.path)
        Ena.queries.append(parse_qs(url.query))
        body = REPORTS.get(url.path)
        status = 200 if body is not None else 404
        data = (body if body is not None else "no such report\nsecond line").encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def ena():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Ena)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_runs_grouped_by_sample(ena, monkeypatch):
    monkeypatch.setenv("SCITQ_ENA_URL", f"{ena}/project")
    samples = sra_get_samples("PRJEB33009")
    assert list(samples) == ["SAMEA5622031", "SAMEA5622032", "SAMEA5622033"]
    first = samples["SAMEA5622031"]
    assert [run.uri for run in first] == ["run+fastq://ERR3258431", "run+fastq://ERR3258433"]
    assert first[0].reads == 25124837
    assert first[0].fastq_bytes == [1658120339, 1702519210]
    assert first[0].layout == "PAIRED"
    assert first[0].secondary_sample == "ERS3429437"
    assert samples["SAMEA5622033"][0].reads is None
    query = Ena.queries[-1]
    assert query["accession"] == ["PRJEB33009"]
    assert query["result"] == ["read_run"]
    assert query["format"] == ["tsv"]


def test_errors_say_what_failed(ena, monkeypatch):
    monkeypatch.setenv("SCITQ_ENA_URL", f"{ena}/project")
    asked = len(Ena.queries)
    with pytest.raises(EnaError) as caught:
        sra_get_samples("SRR123")
    assert str(caught.value) == (
        'invalid project accession "SRR123": expected PRJEB, PRJNA, PRJDB, ERP, SRP or DRP and digits')
    assert len(Ena.queries) == asked, "a malformed accession is refused before any request"
    with pytest.raises(EnaError) as caught:
        sra_get_samples("PRJEB1", ena_url=f"{ena}/no-such-report")
    assert str(caught.value) == "ENA project PRJEB1: file report answered 404 Not Found: no such report"
    monkeypatch.setenv("SCITQ_ENA_URL", f"{ena}/empty-project")
    with pytest.raises(EnaError) as caught:
        sra_get_samples("PRJNA2")
    assert str(caught.value) == "ENA project PRJNA2: no runs"
