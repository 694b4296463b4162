# Small BigBlueButton (bbb-web) API client. Standard library only, Python 3.10+.
#
# Used by library/bbb_api_health.py (shipped to managed hosts as
# ansible.module_utils.bbb_api) and by scripts/bbb-health, which imports this
# file directly by path. Do not import anything from ansible here.
#
# Protocol facts this file relies on (BBB 3.0):
# * checksum = hex(hash(callName + queryString + sharedSecret)); the query string
#   is the one sent, without the checksum parameter (docs "API Security Model").
# * bbb-web picks the algorithm from the checksum's hex length (40 sha1, 64 sha256,
#   96 sha384, 128 sha512) and accepts it only if the algorithm is listed in
#   supportedChecksumAlgorithms (GetChecksumValidator in bbb-common-web).
# * Every response is XML <response> with <returncode>SUCCESS|FAILED</returncode>,
#   and <messageKey>/<message> on errors.
"""Minimal, dependency-free BigBlueButton API client and health check."""

import hashlib
import http.client
import re
import secrets
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

ALGORITHM_HEX_LENGTH = {"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}
ALGORITHMS = tuple(ALGORITHM_HEX_LENGTH)
CHECK_NAMES = ("index", "meetings", "recordings", "probe")
MAX_BODY_BYTES = 8 * 1024 * 1024
USER_AGENT = "smeeton-bbb-health/1"

# Plain-words explanations for BBB messageKeys the health check is likely to meet.
MESSAGE_KEY_TEXT = {
    "checksumError": (
        "checksum rejected: the secret in the inventory does not match the server "
        "(or the algorithm is not allowed)"
    ),
    "notFound": "meeting not found on the server",
    "invalidMeetingIdentifier": "meeting not found on the server",
    "missingParamMeetingID": "the request had no meetingID",
    "missingParamFullName": "the request had no fullName",
    "idNotUnique": "a meeting with that meetingID already exists with other passwords",
    "meetingForciblyEnded": "the meeting was already ended",
    "maxParticipantsReached": "the meeting is full",
    "guestDeniedAccess": "the guest policy denied the join",
    "validationError": "the server rejected the request parameters",
    "noActionSpecified": "no API call was given",
}

SEVERITY_ORDER = {"ok": 0, "warning": 1, "critical": 2}


class BBBError(Exception):
    """Base class: every failure of a BBB call. ``kind`` is a short stable tag."""

    kind = "error"
    severity = "critical"

    def __init__(self, text, call=None, message_key=None, message=None, latency_ms=None):
        super().__init__(text)
        self.text = text
        self.call = call
        self.message_key = message_key
        self.message = message
        self.latency_ms = latency_ms

    def __str__(self):
        prefix = f"{self.call}: " if self.call else ""
        return prefix + self.text


class BBBConnectionError(BBBError):
    kind = "unreachable"


class BBBTimeoutError(BBBError):
    kind = "timeout"


class BBBTLSError(BBBError):
    kind = "tls"


class BBBProtocolError(BBBError):
    """The server answered, but not with a usable BBB XML response."""

    kind = "protocol"


class BBBApiError(BBBError):
    """BBB answered returncode FAILED."""

    kind = "failed"


class BBBUsageError(ValueError):
    """Bad arguments given to this library (not a server problem)."""


# --------------------------------------------------------------------------- #
# Checksums and URLs
# --------------------------------------------------------------------------- #


def checksum(call, query_string, secret, algorithm="sha1"):
    """Return hex(hash(call + query_string + secret)) as bbb-web computes it."""
    if algorithm not in ALGORITHM_HEX_LENGTH:
        raise BBBUsageError(
            f"unsupported checksum algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}"
        )
    data = (call + query_string + secret).encode("utf-8")
    return hashlib.new(algorithm, data).hexdigest()


def algorithm_for_checksum(value):
    """Map a checksum's hex length to the algorithm bbb-web would use (or None)."""
    for name, length in ALGORITHM_HEX_LENGTH.items():
        if len(value) == length:
            return name
    return None


def _param_items(params):
    if params is None:
        return []
    items = params.items() if isinstance(params, dict) else params
    out = []
    for key, value in items:
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append((str(key), text))
    return out


def encode_query(params):
    """URL-encode parameters in the given order, as BBB's docs show them.

    Spaces become ``+`` (the docs' worked example hashes ``name=Test+Meeting``),
    every reserved character (``&=+/?#%`` ...) is percent-encoded, and non-ASCII
    text is UTF-8 percent-encoded. bbb-web hashes the raw query string it
    receives, so what matters is that the string hashed is the string sent.
    """
    return urllib.parse.urlencode(_param_items(params), quote_via=urllib.parse.quote_plus)


def signed_query(call, params, secret, algorithm="sha1"):
    """Return ``query&checksum=...`` for ``call`` (query may be empty)."""
    query = encode_query(params)
    digest = checksum(call, query, secret, algorithm)
    return f"{query}&checksum={digest}" if query else f"checksum={digest}"


def normalize_base_url(base_url):
    """Strip a trailing slash; require http(s)://host/... ."""
    parsed = urllib.parse.urlsplit(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BBBUsageError(
            f"base URL must look like https://host/bigbluebutton/api, got {base_url!r}"
        )
    if parsed.query or parsed.fragment:
        raise BBBUsageError("base URL must not contain a query string or fragment")
    return base_url.strip().rstrip("/")


def build_url(base_url, call, params, secret, algorithm="sha1"):
    """Full checksummed URL for ``call`` (e.g. ``getMeetings``)."""
    base = normalize_base_url(base_url)
    return f"{base}/{call}?{signed_query(call, params, secret, algorithm)}"


def redact_url(url):
    """The URL without its query string (for messages: no checksums, tokens)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# --------------------------------------------------------------------------- #
# XML
# --------------------------------------------------------------------------- #

_FORBIDDEN_XML = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


def _element_to_value(elem):
    children = list(elem)
    if not children:
        return (elem.text or "").strip()
    out = {}
    for child in children:
        value = _element_to_value(child)
        if child.tag in out:
            if not isinstance(out[child.tag], list):
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    return out


def parse_xml(body):
    """Parse a BBB XML body into plain dicts/strings.

    Repeated child tags become lists; leaf elements become stripped strings;
    ``<meetings/>`` becomes ``""`` (use :func:`as_list`). Raises
    BBBProtocolError for anything that is not a ``<response>`` document.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not body or not body.strip():
        raise BBBProtocolError("empty response body (expected BBB XML)")
    if _FORBIDDEN_XML.search(body):
        raise BBBProtocolError("response contains a DTD/entity declaration; refused")
    try:
        root = ET.fromstring(body)  # noqa: S314 - DTD/entities refused above
    except ET.ParseError as exc:
        snippet = body[:80].decode("utf-8", "replace").replace("\n", " ")
        raise BBBProtocolError(
            f"malformed XML from server ({exc}); body starts {snippet!r}"
        ) from exc
    if root.tag != "response":
        raise BBBProtocolError(f"unexpected XML root <{root.tag}> (expected <response>)")
    value = _element_to_value(root)
    return value if isinstance(value, dict) else {}


def as_list(container, item_tag):
    """``as_list(resp.get('meetings'), 'meeting')`` -> list of dicts, also for 0/1 items."""
    if not isinstance(container, dict):
        return []
    items = container.get(item_tag)
    if items is None or items == "":
        return []
    return items if isinstance(items, list) else [items]


def describe_failure(message_key, message):
    """Plain-words text for a FAILED response."""
    text = MESSAGE_KEY_TEXT.get(message_key or "")
    detail = f"messageKey={message_key or '-'}"
    if message:
        detail += f", message={message!r}"
    if text:
        return f"{text} ({detail})"
    return f"server answered FAILED ({detail})"


def parse_version(text):
    """'3.0.12-beta' -> (3, 0, 12); None if no leading number."""
    nums = re.findall(r"\d+", text or "")
    if not nums:
        return None
    return tuple(int(n) for n in nums[:4])


def version_below(actual, minimum):
    a, m = parse_version(actual), parse_version(minimum)
    if a is None or m is None:
        return False
    width = max(len(a), len(m))
    return a + (0,) * (width - len(a)) < m + (0,) * (width - len(m))


# --------------------------------------------------------------------------- #
# HTTP client
# --------------------------------------------------------------------------- #


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report 3xx as responses instead of following them (join redirects)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0917
        return None


class BBBResponse:
    def __init__(self, call, status, data, latency_ms, headers=None):
        self.call = call
        self.status = status
        self.data = data
        self.latency_ms = latency_ms
        self.headers = headers or {}

    @property
    def message_key(self):
        return self.data.get("messageKey") or None

    def __repr__(self):
        return f"BBBResponse({self.call!r}, status={self.status}, data={self.data!r})"


def parse_connect_to(value):
    """Parse ``host:port`` / ``[v6]:port`` / ``host`` into (host, port or None)."""
    value = (value or "").strip()
    if not value:
        return None
    parsed = urllib.parse.urlsplit("//" + value)
    try:
        port = parsed.port
    except ValueError as exc:
        raise BBBUsageError(f"connect_to {value!r}: bad port") from exc
    if not parsed.hostname:
        raise BBBUsageError(f"connect_to {value!r}: expected host:port")
    return parsed.hostname, port


def _connect_to_class(base, address):
    """A connection class that opens its TCP connection to ``address`` while
    keeping the URL's host for the Host header, TLS SNI and the certificate
    name check (what ``curl --connect-to`` does)."""
    target_host, target_port = address

    class _Connection(base):
        def connect(self):
            self.sock = socket.create_connection(
                (target_host, target_port or self.port), self.timeout, self.source_address
            )
            if isinstance(self, http.client.HTTPSConnection):
                self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)

    return _Connection


class _ConnectToHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, address):
        super().__init__()
        self._cls = _connect_to_class(http.client.HTTPConnection, address)

    def http_open(self, req):
        return self.do_open(self._cls, req)


class _ConnectToHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context, address):
        super().__init__(context=context)
        self._cls = _connect_to_class(http.client.HTTPSConnection, address)

    def https_open(self, req):
        return self.do_open(self._cls, req, context=self._context)


class BBBClient:
    """One BBB server. ``latency_ms`` keeps the last latency per call name.

    ``connect_to`` ("host:port") sends the requests to that address instead of
    the URL's host while the URL's name is still used for the Host header, SNI
    and certificate validation: for checking one node behind a load balancer,
    or a lab host behind a port published on 127.0.0.1.
    """

    def __init__(
        self,
        base_url,
        secret,
        *,
        algorithm="sha256",
        timeout=10.0,
        validate_certs=True,
        ca_path=None,
        use_env_proxy=False,
        connect_to=None,
    ):
        if not secret:
            raise BBBUsageError("no API secret given")
        if algorithm not in ALGORITHM_HEX_LENGTH:
            raise BBBUsageError(
                f"unsupported checksum algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}"
            )
        self.base_url = normalize_base_url(base_url)
        self._secret = secret
        self.algorithm = algorithm
        self.timeout = float(timeout)
        self.latency_ms = {}
        handlers = [_NoRedirect()]
        address = parse_connect_to(connect_to)
        if not use_env_proxy or address:
            handlers.append(urllib.request.ProxyHandler({}))
        if self.base_url.startswith("https:"):
            context = self._ssl_context(validate_certs, ca_path)
            handlers.append(
                _ConnectToHTTPSHandler(context, address)
                if address
                else urllib.request.HTTPSHandler(context=context)
            )
        elif address:
            handlers.append(_ConnectToHTTPHandler(address))
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self):  # never show the secret
        return f"BBBClient({self.base_url!r}, algorithm={self.algorithm!r})"

    @staticmethod
    def _ssl_context(validate_certs, ca_path):
        if not validate_certs:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        try:
            return (
                ssl.create_default_context(cafile=ca_path)
                if ca_path
                else ssl.create_default_context()
            )
        except (OSError, ssl.SSLError) as exc:
            raise BBBUsageError(f"cannot load CA file {ca_path!r}: {exc}") from exc

    def url(self, call, params=None):
        return build_url(self.base_url, call, params, self._secret, self.algorithm)

    def _fetch(self, call, url):
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
        start = time.monotonic()

        def elapsed():
            return round((time.monotonic() - start) * 1000.0, 1)

        where = redact_url(url)
        try:
            try:
                resp = self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                resp = exc  # 3xx (not followed) and 4xx/5xx: still read it
            with resp:
                status = resp.getcode()
                headers = dict(resp.headers.items()) if resp.headers else {}
                body = resp.read(MAX_BODY_BYTES + 1)
        except urllib.error.URLError as exc:
            raise self._map_network_error(call, where, exc.reason, elapsed()) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._map_network_error(call, where, exc, elapsed()) from exc
        latency = elapsed()
        self.latency_ms[call] = latency
        if len(body) > MAX_BODY_BYTES:
            raise BBBProtocolError(
                f"response from {where} is larger than {MAX_BODY_BYTES} bytes",
                call=call,
                latency_ms=latency,
            )
        return status, headers, body, latency

    @staticmethod
    def _map_network_error(call, where, reason, latency):
        if isinstance(reason, ssl.SSLCertVerificationError):
            detail = getattr(reason, "verify_message", None) or str(reason)
            return BBBTLSError(
                f"TLS certificate verification failed for {where}: {detail}",
                call=call,
                latency_ms=latency,
            )
        if isinstance(reason, ssl.SSLError):
            return BBBTLSError(
                f"TLS handshake with {where} failed: {reason}", call=call, latency_ms=latency
            )
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return BBBTimeoutError(
                f"no answer from {where} within the timeout", call=call, latency_ms=latency
            )
        if isinstance(reason, ConnectionRefusedError):
            return BBBConnectionError(
                f"connection refused by {where} (nothing listening?)", call=call, latency_ms=latency
            )
        if isinstance(reason, socket.gaierror):
            return BBBConnectionError(
                f"DNS lookup failed for {where}: {reason}", call=call, latency_ms=latency
            )
        if isinstance(
            reason,
            (ConnectionResetError, http.client.RemoteDisconnected, http.client.IncompleteRead),
        ):
            return BBBConnectionError(
                f"connection to {where} was closed early: {reason}", call=call, latency_ms=latency
            )
        return BBBConnectionError(f"cannot reach {where}: {reason}", call=call, latency_ms=latency)

    def _parse(self, call, status, body, latency, expect_success):
        if status >= 400:
            raise BBBProtocolError(
                f"HTTP {status} from {self.base_url}/{call}", call=call, latency_ms=latency
            )
        try:
            data = parse_xml(body)
        except BBBProtocolError as exc:
            exc.call, exc.latency_ms = call, latency
            raise
        code = data.get("returncode")
        if code not in ("SUCCESS", "FAILED"):
            raise BBBProtocolError(
                f"response has no SUCCESS/FAILED returncode (got {code!r})",
                call=call,
                latency_ms=latency,
            )
        if code == "FAILED" and expect_success:
            key, message = data.get("messageKey") or None, data.get("message") or None
            raise BBBApiError(
                describe_failure(key, message),
                call=call,
                message_key=key,
                message=message,
                latency_ms=latency,
            )
        return data

    def call(self, name, params=None, expect_success=True):
        """Signed GET of ``name``; returns BBBResponse (raises BBBError)."""
        status, headers, body, latency = self._fetch(name, self.url(name, params))
        if 300 <= status < 400:
            raise BBBProtocolError(
                f"unexpected HTTP {status} redirect", call=name, latency_ms=latency
            )
        data = self._parse(name, status, body, latency, expect_success)
        return BBBResponse(name, status, data, latency, headers)

    # -- API calls -------------------------------------------------------- #

    def index(self):
        """GET the API root (no checksum): version, apiVersion, bbbVersion."""
        status, headers, body, latency = self._fetch("index", self.base_url)
        data = self._parse("index", status, body, latency, True)
        return BBBResponse("index", status, data, latency, headers)

    def get_meetings(self):
        return self.call("getMeetings")

    def get_recordings(self, **params):
        return self.call("getRecordings", params)

    def create(self, meeting_id, name, **params):
        return self.call("create", [("name", name), ("meetingID", meeting_id), *params.items()])

    def join(self, meeting_id, full_name, password=None, redirect=False, **params):
        """join; with redirect=False BBB answers XML with <url> (the default here)."""
        items = [("fullName", full_name), ("meetingID", meeting_id), ("password", password)]
        items += list(params.items())
        items.append(("redirect", "true" if redirect else "false"))
        if not redirect:
            return self.call("join", items)
        status, headers, body, latency = self._fetch("join", self.url("join", items))
        data = {}
        if not 300 <= status < 400:
            data = self._parse("join", status, body, latency, True)
        return BBBResponse("join", status, data, latency, headers)

    def is_meeting_running(self, meeting_id):
        return self.call("isMeetingRunning", [("meetingID", meeting_id)])

    def get_meeting_info(self, meeting_id):
        return self.call("getMeetingInfo", [("meetingID", meeting_id)])

    def end(self, meeting_id, password=None):
        return self.call("end", [("meetingID", meeting_id), ("password", password)])


# --------------------------------------------------------------------------- #
# Health check (shared by the Ansible module and the CLI)
# --------------------------------------------------------------------------- #


def _problem(result, severity, check, text):
    result["problem_details"].append({"severity": severity, "check": check, "text": text})
    result["problems"].append(text)


def _error_problem(result, check, exc):
    result["errors"][check] = exc.kind
    if exc.message_key:
        result["message_keys"][check] = exc.message_key
    where = f"{check} ({exc.call})" if exc.call and exc.call != check else check
    _problem(result, exc.severity, check, f"{where}: {exc.text}")
    # A timed-out call's duration is the timeout itself: not a latency figure.
    if exc.latency_ms is not None and exc.call and exc.kind != "timeout":
        result["latency_ms"].setdefault(exc.call, exc.latency_ms)


def _as_int(value):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0


def run_probe(client, result, probe_prefix="smeeton-health"):
    """create -> join(redirect=false) -> isMeetingRunning -> end (end always tried)."""
    meeting_id = f"{probe_prefix}-{secrets.token_hex(8)}"
    moderator_pw = secrets.token_urlsafe(12)
    probe = {
        "meeting_id": meeting_id,
        "created": False,
        "joined": False,
        "running": None,
        "ended": False,
    }
    result["probe"] = probe
    try:
        client.create(
            meeting_id,
            "SmeetOn health probe",
            attendeePW=secrets.token_urlsafe(12),
            moderatorPW=moderator_pw,
            record="false",
        )
        probe["created"] = True
        joined = client.join(
            meeting_id, "SmeetOn health probe", password=moderator_pw, redirect=False
        )
        data = joined.data
        if not data.get("url") and not data.get("session_token"):
            _problem(
                result,
                "critical",
                "probe",
                "probe: join answered SUCCESS but without a url/session_token",
            )
        else:
            probe["joined"] = True
        running = client.is_meeting_running(meeting_id)
        # On a real server 'running' turns true only once a client really enters the
        # conference, so false is reported but is not a problem.
        probe["running"] = running.data.get("running") == "true"
    except BBBError as exc:
        _error_problem(result, "probe", exc)
    finally:
        if probe["created"]:
            try:
                client.end(meeting_id, password=moderator_pw)
                probe["ended"] = True
            except BBBError as exc:
                result["errors"]["probe_end"] = exc.kind
                _problem(
                    result,
                    "warning",
                    "probe",
                    f"probe: meeting {meeting_id} could not be ended: {exc}",
                )


def health_check(
    client,
    *,
    checks=CHECK_NAMES,
    min_version=None,
    latency_threshold_ms=None,
    run_probe_meeting=True,
    probe_prefix="smeeton-health",
):
    """Run the chosen checks; never raises BBBError. Returns a plain dict.

    Severity: ``critical`` for unreachable/timeout/TLS/HTTP/malformed XML/FAILED
    (incl. checksumError); ``warning`` for latency over threshold, version below
    ``min_version``, missing version, or a probe meeting that could not be ended.
    """
    unknown = [c for c in checks if c not in CHECK_NAMES]
    if unknown:
        raise BBBUsageError(f"unknown checks {unknown}; choose from {list(CHECK_NAMES)}")
    result = {
        "base_url": client.base_url,
        "checksum_algorithm": client.algorithm,
        "checks": list(checks),
        "healthy": False,
        "status": "ok",
        "version": None,
        "apiVersion": None,
        "bbbVersion": None,
        "meetings": None,
        "participant_count": None,
        "recordings_reachable": None,
        "probe": None,
        "probe_skipped": False,
        "probe_skipped_reason": None,
        "latency_ms": {},
        "errors": {},
        "message_keys": {},
        "problems": [],
        "problem_details": [],
    }
    client.latency_ms = result["latency_ms"]

    if "index" in checks:
        try:
            data = client.index().data
            result["version"] = data.get("version") or None
            result["apiVersion"] = data.get("apiVersion") or data.get("version") or None
            result["bbbVersion"] = data.get("bbbVersion") or None
            if min_version:
                if not result["bbbVersion"]:
                    _problem(
                        result,
                        "warning",
                        "index",
                        f"index: server did not report bbbVersion (minimum is {min_version})",
                    )
                elif version_below(result["bbbVersion"], min_version):
                    _problem(
                        result,
                        "warning",
                        "index",
                        f"index: BBB version {result['bbbVersion']} is below the minimum "
                        f"{min_version}",
                    )
        except BBBError as exc:
            _error_problem(result, "index", exc)

    if "meetings" in checks:
        try:
            data = client.get_meetings().data
            meetings = as_list(data.get("meetings"), "meeting")
            result["meetings"] = len(meetings)
            result["participant_count"] = sum(_as_int(m.get("participantCount")) for m in meetings)
        except BBBError as exc:
            _error_problem(result, "meetings", exc)

    if "recordings" in checks:
        try:
            client.get_recordings(limit=1)
            result["recordings_reachable"] = True
        except BBBError as exc:
            result["recordings_reachable"] = False
            _error_problem(result, "recordings", exc)

    if "probe" in checks:
        if run_probe_meeting:
            run_probe(client, result, probe_prefix)
        else:
            result["probe_skipped"] = True
            result["probe_skipped_reason"] = (
                "check mode: the probe meeting (create/join/end) writes"
            )

    if latency_threshold_ms:
        for call, ms in sorted(result["latency_ms"].items()):
            if ms > latency_threshold_ms:
                _problem(
                    result,
                    "warning",
                    "latency",
                    f"latency: {call} took {ms:.0f} ms (threshold {latency_threshold_ms} ms)",
                )

    worst = "ok"
    for detail in result["problem_details"]:
        if SEVERITY_ORDER[detail["severity"]] > SEVERITY_ORDER[worst]:
            worst = detail["severity"]
    result["status"] = worst
    result["healthy"] = not result["problems"]
    return result
