"""Unit tests for module_utils/bbb_api.py (all network traffic stays on 127.0.0.1)."""

import hashlib
import socket
import ssl
import subprocess
import threading
import urllib.parse

import pytest
from ansible.module_utils import bbb_api
from ansible.module_utils.bbb_api import (
    BBBApiError,
    BBBClient,
    BBBConnectionError,
    BBBProtocolError,
    BBBTimeoutError,
    BBBTLSError,
    BBBUsageError,
    as_list,
    build_url,
    checksum,
    encode_query,
    parse_connect_to,
    parse_xml,
    signed_query,
    version_below,
)

# Worked example published in BBB's API docs ("API Security Model" > "Usage").
DOCS_QUERY = "name=Test+Meeting&meetingID=abc123&attendeePW=111222&moderatorPW=333444"
DOCS_SECRET = "639259d4-9dd8-4b25-bf01-95f9567eaf4b"
DOCS_SHA1 = "1fcbb0c4fc1f039f73aa6d697d2db9ba7f803f17"


def test_checksum_matches_bbb_docs_worked_example():
    assert checksum("create", DOCS_QUERY, DOCS_SECRET, "sha1") == DOCS_SHA1


def test_encode_query_reproduces_docs_example_query():
    params = [
        ("name", "Test Meeting"),
        ("meetingID", "abc123"),
        ("attendeePW", "111222"),
        ("moderatorPW", "333444"),
    ]
    assert encode_query(params) == DOCS_QUERY
    assert signed_query("create", params, DOCS_SECRET, "sha1") == (
        f"{DOCS_QUERY}&checksum={DOCS_SHA1}"
    )


@pytest.mark.parametrize(
    ("algorithm", "length"), [("sha1", 40), ("sha256", 64), ("sha384", 96), ("sha512", 128)]
)
def test_checksum_all_algorithms(algorithm, length):
    value = checksum("create", DOCS_QUERY, DOCS_SECRET, algorithm)
    expected = hashlib.new(algorithm, ("create" + DOCS_QUERY + DOCS_SECRET).encode()).hexdigest()
    assert value == expected
    assert len(value) == length
    assert bbb_api.algorithm_for_checksum(value) == algorithm


def test_checksum_rejects_unknown_algorithm():
    with pytest.raises(BBBUsageError):
        checksum("create", "", "s", "md5")


def test_empty_query_signs_call_name_plus_secret():
    assert signed_query("getMeetings", None, "s3", "sha1") == (
        "checksum=" + hashlib.sha1(b"getMeetingss3").hexdigest()  # noqa: S324
    )


def test_encoding_spaces_unicode_and_reserved_characters():
    q = encode_query([("name", "Café Zürich 会议"), ("meetingID", "a&b=c+d/e?f#g%h")])
    assert q == (
        "name=Caf%C3%A9+Z%C3%BCrich+%E4%BC%9A%E8%AE%AE&meetingID=a%26b%3Dc%2Bd%2Fe%3Ff%23g%25h"
    )
    # Round trip: what the server decodes is what we meant.
    assert urllib.parse.parse_qs(q)["meetingID"] == ["a&b=c+d/e?f#g%h"]


def test_encoding_booleans_and_none():
    assert encode_query({"record": False, "x": None, "redirect": True}) == (
        "record=false&redirect=true"
    )


def test_build_url_hashes_exactly_the_query_sent():
    url = build_url(
        "https://bbb.example/bigbluebutton/api/",
        "create",
        [("name", "Ünï cödé"), ("meetingID", "m 1")],
        "sec",
        "sha256",
    )
    parts = urllib.parse.urlsplit(url)
    assert parts.path == "/bigbluebutton/api/create"
    sent, _, digest = parts.query.rpartition("&checksum=")
    assert digest == hashlib.sha256(("create" + sent + "sec").encode()).hexdigest()


@pytest.mark.parametrize("bad", ["bbb.example/bigbluebutton/api", "ftp://x/api", "https://x/a?q=1"])
def test_bad_base_url(bad):
    with pytest.raises(BBBUsageError):
        BBBClient(bad, "s")


def test_client_repr_hides_secret():
    client = BBBClient("https://x/bigbluebutton/api", "topsecret")
    assert "topsecret" not in repr(client)


def test_parse_success_with_lists():
    data = parse_xml(
        b"<response><returncode>SUCCESS</returncode><meetings>"
        b"<meeting><meetingID>a</meetingID><participantCount>2</participantCount></meeting>"
        b"<meeting><meetingID>b</meetingID><participantCount>3</participantCount></meeting>"
        b"</meetings></response>"
    )
    meetings = as_list(data["meetings"], "meeting")
    assert [m["meetingID"] for m in meetings] == ["a", "b"]
    one = parse_xml(
        "<response><returncode>SUCCESS</returncode><meetings><meeting>"
        "<meetingID>x</meetingID></meeting></meetings></response>"
    )
    assert as_list(one["meetings"], "meeting") == [{"meetingID": "x"}]
    empty = parse_xml(
        "<response><returncode>SUCCESS</returncode><meetings/>"
        "<messageKey>noMeetings</messageKey></response>"
    )
    assert as_list(empty["meetings"], "meeting") == []
    assert empty["messageKey"] == "noMeetings"


def test_parse_failed_body_and_describe():
    data = parse_xml(
        "<response><returncode>FAILED</returncode><messageKey>checksumError</messageKey>"
        "<message>Checksums do not match</message></response>"
    )
    assert data["returncode"] == "FAILED"
    text = bbb_api.describe_failure(data["messageKey"], data["message"])
    assert text.startswith("checksum rejected: the secret in the inventory does not match")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<response><returncode>SUCCESS</returncode><version>2.0</vers",
        b"<html><body>502 Bad Gateway</body></html>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><response>&a;</response>',
    ],
)
def test_parse_malformed(body):
    with pytest.raises(BBBProtocolError):
        parse_xml(body)


def test_version_compare():
    assert version_below("2.7.9", "3.0.0")
    assert not version_below("3.0.12", "3.0.0")
    assert not version_below("3.0", "3.0.0")
    assert version_below("3.0.0-beta", "3.0.1")


# --------------------------------------------------------------------------- #
# Network failures against local sockets
# --------------------------------------------------------------------------- #


@pytest.fixture
def silent_server():
    """Accepts TCP connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    sock.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused():
    client = BBBClient(f"http://127.0.0.1:{_free_port()}/bigbluebutton/api", "s", timeout=2)
    with pytest.raises(BBBConnectionError) as err:
        client.get_meetings()
    assert "connection refused" in str(err.value)


def test_timeout_http(silent_server):
    client = BBBClient(f"http://127.0.0.1:{silent_server}/bigbluebutton/api", "s", timeout=0.3)
    with pytest.raises(BBBTimeoutError):
        client.index()


def test_timeout_tls_handshake(silent_server):
    client = BBBClient(f"https://127.0.0.1:{silent_server}/bigbluebutton/api", "s", timeout=0.3)
    with pytest.raises(BBBTimeoutError):
        client.index()


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:bbb.smeeton.invalid",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class TLSServerURL(str):
    """The server's URL, with its port and the Host headers it saw."""


@pytest.fixture
def tls_server(tls_cert):
    """A one-file HTTPS server answering a BBB index body, self-signed cert.

    The Host headers it receives are kept in ``tls_server.seen_hosts``."""
    seen_hosts = []
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen_hosts.append(self.headers.get("Host"))
            body = (
                b"<response><returncode>SUCCESS</returncode><version>2.0</version>"
                b"<apiVersion>2.0</apiVersion><bbbVersion>3.0.9</bbbVersion></response>"
            )
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = TLSServerURL(f"https://127.0.0.1:{srv.server_port}/bigbluebutton/api")
    url.port, url.seen_hosts = srv.server_port, seen_hosts
    yield url
    srv.shutdown()
    srv.server_close()


def test_tls_untrusted_cert_is_rejected_by_default(tls_server):
    with pytest.raises(BBBTLSError) as err:
        BBBClient(tls_server, "s", timeout=3).index()
    assert "verification failed" in str(err.value)


def test_tls_ca_path_trusts_private_ca(tls_server, tls_cert):
    data = BBBClient(tls_server, "s", timeout=3, ca_path=str(tls_cert[0])).index().data
    assert data["bbbVersion"] == "3.0.9"


def test_tls_verification_can_be_disabled(tls_server):
    assert BBBClient(tls_server, "s", timeout=3, validate_certs=False).index().data["version"] == (
        "2.0"
    )


def test_tls_missing_ca_file_is_usage_error(tmp_path):
    with pytest.raises(BBBUsageError):
        BBBClient("https://x/bigbluebutton/api", "s", ca_path=str(tmp_path / "nope.pem"))


def test_api_failed_maps_to_exception(monkeypatch):
    client = BBBClient("http://127.0.0.1:1/bigbluebutton/api", "s")
    body = (
        b"<response><returncode>FAILED</returncode><messageKey>notFound</messageKey>"
        b"<message>We could not find a meeting with that meeting ID</message></response>"
    )
    monkeypatch.setattr(client, "_fetch", lambda call, url: (200, {}, body, 1.0))
    with pytest.raises(BBBApiError) as err:
        client.get_meeting_info("x")
    assert err.value.message_key == "notFound"
    assert "meeting not found" in str(err.value)


def test_http_error_status_is_protocol_error(monkeypatch):
    client = BBBClient("http://127.0.0.1:1/bigbluebutton/api", "s")
    monkeypatch.setattr(client, "_fetch", lambda call, url: (502, {}, b"bad gateway", 1.0))
    with pytest.raises(BBBProtocolError, match="HTTP 502"):
        client.get_meetings()


# --- connect_to: connect to one address, validate the URL's name ------------
# bbb.smeeton.invalid never resolves (RFC 2606), so a success proves the
# connection went to connect_to while the name was used for SNI, the
# certificate check and the Host header.


def test_connect_to_uses_url_name_for_tls_and_host_header(tls_server, tls_cert):
    url = f"https://bbb.smeeton.invalid:{tls_server.port}/bigbluebutton/api"
    client = BBBClient(
        url, "s", timeout=3, ca_path=str(tls_cert[0]), connect_to=f"127.0.0.1:{tls_server.port}"
    )
    assert client.index().data["bbbVersion"] == "3.0.9"
    assert tls_server.seen_hosts[-1] == f"bbb.smeeton.invalid:{tls_server.port}"


def test_connect_to_still_validates_the_certificate_name(tls_server, tls_cert):
    url = f"https://other.smeeton.invalid:{tls_server.port}/bigbluebutton/api"
    client = BBBClient(
        url, "s", timeout=3, ca_path=str(tls_cert[0]), connect_to=f"127.0.0.1:{tls_server.port}"
    )
    with pytest.raises(BBBTLSError):
        client.index()


def test_without_connect_to_the_name_must_resolve(tls_server, tls_cert):
    url = f"https://bbb.smeeton.invalid:{tls_server.port}/bigbluebutton/api"
    with pytest.raises(BBBConnectionError):
        BBBClient(url, "s", timeout=3, ca_path=str(tls_cert[0])).index()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("[::1]:443", ("::1", 443)),
        ("host", ("host", None)),
    ],
)
def test_parse_connect_to(value, expected):
    assert parse_connect_to(value) == expected


@pytest.mark.parametrize("bad", ["host:port", ":443", "h:99999"])
def test_parse_connect_to_rejects_bad_values(bad):
    with pytest.raises(BBBUsageError):
        parse_connect_to(bad)
