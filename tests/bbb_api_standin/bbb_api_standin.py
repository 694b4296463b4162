#!/usr/bin/env python3
"""TEST DOUBLE of BigBlueButton's bbb-web API -- NOT BigBlueButton.

This stands in for bbb-web where real BBB cannot run (unit/integration tests, the
container lab). It is for tests and the lab only and is never deployed by the
production playbooks. It keeps all state in memory and implements only what the
SmeetOn health checks need, following BBB 3.0's documented rules:

* The API lives under ``/bigbluebutton/api/`` (index at ``/bigbluebutton/api``).
* checksum = hex(hash(callName + queryStringWithoutChecksum + securitySalt)); the
  raw query string as received is used, with ``checksum=...`` removed the same
  way bbb-common-web's GetChecksum does. The algorithm is chosen by the hex
  length (40 sha1, 64 sha256, 96 sha384, 128 sha512) and accepted only when it
  is listed in ``supportedChecksumAlgorithms`` (GetChecksumValidator).
* ``securitySalt`` and ``supportedChecksumAlgorithms`` are re-read from the
  properties file on EVERY request, so a rotated secret takes effect at once.
  (Real bbb-web reads them at start-up; restart it after a change.)
* XML shapes and messageKeys follow the BBB API docs: checksumError,
  duplicateWarning, notFound, noMeetings, noRecordings, sentEndMeetingRequest,
  successfullyJoined.

Simplification: a successful join marks the meeting running and increments
participantCount right away (real BBB waits until the client connects).

Test hooks exist ONLY as command-line flags (never via HTTP): ``--delay-ms N``
delays every answer, ``--malformed`` answers with broken XML.

Usage::

    python3 bbb_api_standin.py --properties /etc/bigbluebutton/bbb-web.properties \\
        --bind 127.0.0.1 --port 8090

Standard library only, Python 3.10+.
"""

import argparse
import hashlib
import hmac
import logging
import secrets
import selectors
import socket
import string
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

API_PREFIX = "/bigbluebutton/api"
HEX_LENGTH_TO_ALGORITHM = {40: "sha1", 64: "sha256", 96: "sha384", 128: "sha512"}
# BBB docs: "By default checksums can be validated with any of the supported algorithms".
DEFAULT_ALGORITHMS = "sha1,sha256,sha384,sha512"
API_VERSION = "2.0"
DEFAULT_BBB_VERSION = "3.0.0-standin"

log = logging.getLogger("bbb_api_standin")


# --------------------------------------------------------------------------- #
# Java .properties (minimal)
# --------------------------------------------------------------------------- #

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text):
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and i + 6 <= len(text):
                try:
                    out.append(chr(int(text[i + 2 : i + 6], 16)))
                    i += 6
                    continue
                except ValueError:
                    pass
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _logical_lines(text):
    buf = None
    for raw in text.splitlines():
        line = raw.lstrip()
        if buf is None and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        cont = trailing % 2 == 1
        if cont:
            line = line[:-1]
        buf = line if buf is None else buf + line
        if not cont:
            yield buf
            buf = None
    if buf is not None:
        yield buf


def parse_properties(text):
    """Parse java.util.Properties text: key=value, key: value, key value; # ! comments."""
    props = {}
    for line in _logical_lines(text):
        key_end, i = None, 0
        while i < len(line):
            ch = line[i]
            if ch == "\\":
                i += 2
                continue
            if ch in "=: \t\f":
                key_end = i
                break
            i += 1
        if key_end is None:
            props[_unescape(line)] = ""
            continue
        key = line[:key_end]
        rest = line[key_end:].lstrip(" \t\f")
        if rest[:1] in ("=", ":") and line[key_end] in " \t\f":
            rest = rest[1:].lstrip(" \t\f")
        elif line[key_end] in "=:":
            rest = line[key_end + 1 :].lstrip(" \t\f")
        props[_unescape(key)] = _unescape(rest)
    return props


def read_properties(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        return parse_properties(fh.read())


# --------------------------------------------------------------------------- #
# Checksum verification (mirrors bbb-common-web GetChecksum/GetChecksumValidator)
# --------------------------------------------------------------------------- #


def query_without_checksum(query, provided):
    q = query.replace("&checksum=" + provided, "")
    q = q.replace("checksum=" + provided + "&", "")
    return q.replace("checksum=" + provided, "")


def verify_checksum(call, raw_query, salt, supported):
    """True if the request's checksum is acceptable. ``supported``: comma list."""
    if salt == "":
        log.warning("securitySalt is empty: checksum security disabled (as in bbb-web)")
        return True
    params = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
    provided = params.get("checksum", [""])[0]
    if not provided:
        return False
    algorithm = HEX_LENGTH_TO_ALGORITHM.get(len(provided))
    allowed = {a.strip().lower() for a in supported.split(",") if a.strip()}
    if algorithm is None or algorithm not in allowed:
        return False
    data = (call + query_without_checksum(raw_query, provided) + salt).encode("utf-8")
    expected = hashlib.new(algorithm, data).hexdigest()
    return hmac.compare_digest(expected.lower(), provided.lower())


# --------------------------------------------------------------------------- #
# XML helpers
# --------------------------------------------------------------------------- #


def _xml(tag, value):
    if isinstance(value, bool):
        value = "true" if value else "false"
    if value is None or value == "":
        return f"<{tag}/>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def response_xml(returncode, fields=(), message_key=None, message=None, raw=""):
    parts = ["<response>", _xml("returncode", returncode)]
    parts += [_xml(k, v) for k, v in fields]
    parts.append(raw)
    if message_key is not None:
        parts.append(_xml("messageKey", message_key))
    if message is not None:
        parts.append(_xml("message", message))
    parts.append("</response>")
    return "".join(parts)


def failed(key, message):
    return response_xml("FAILED", message_key=key, message=message)


def _parse_boolean(value):
    """java.lang.Boolean.parseBoolean: only 'true' (any case) is true."""
    return (value or "").lower() == "true"


def _token(n):
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


# --------------------------------------------------------------------------- #
# In-memory meetings
# --------------------------------------------------------------------------- #


class StandinState:
    def __init__(self, bbb_version=DEFAULT_BBB_VERSION):
        self.lock = threading.Lock()
        self.meetings = {}
        self.bbb_version = bbb_version

    @staticmethod
    def new_meeting(params):
        meeting_id = params["meetingID"]
        now = int(time.time() * 1000)
        internal = hashlib.sha1(meeting_id.encode("utf-8")).hexdigest() + f"-{now}"  # noqa: S324
        return {
            "meetingName": params.get("name") or meeting_id,
            "meetingID": meeting_id,
            "internalMeetingID": internal,
            "createTime": now,
            "createDate": time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(now / 1000)),
            "voiceBridge": str(70000 + secrets.randbelow(29999)),
            "dialNumber": "613-555-1234",
            "attendeePW": params.get("attendeePW") or _token(8),
            "moderatorPW": params.get("moderatorPW") or _token(8),
            "running": False,
            "duration": params.get("duration") or "0",
            "hasUserJoined": False,
            "recording": False,
            "hasBeenForciblyEnded": False,
            "startTime": now,
            "endTime": 0,
            "participantCount": 0,
            "listenerCount": 0,
            "voiceParticipantCount": 0,
            "videoCount": 0,
            "maxUsers": params.get("maxParticipants") or "0",
            "moderatorCount": 0,
            "attendees": [],
            "metadata": {k[5:]: v for k, v in params.items() if k.startswith("meta_")},
            "isBreakout": False,
        }

    @staticmethod
    def meeting_xml(m, wrap="meeting"):
        scalar = [
            "meetingName",
            "meetingID",
            "internalMeetingID",
            "createTime",
            "createDate",
            "voiceBridge",
            "dialNumber",
            "attendeePW",
            "moderatorPW",
            "running",
            "duration",
            "hasUserJoined",
            "recording",
            "hasBeenForciblyEnded",
            "startTime",
            "endTime",
            "participantCount",
            "listenerCount",
            "voiceParticipantCount",
            "videoCount",
            "maxUsers",
            "moderatorCount",
        ]
        parts = [_xml(k, m[k]) for k in scalar]
        attendees = "".join(
            "<attendee>" + "".join(_xml(k, v) for k, v in a.items()) + "</attendee>"
            for a in m["attendees"]
        )
        parts.append(f"<attendees>{attendees}</attendees>" if attendees else "<attendees/>")
        meta = "".join(_xml(k, v) for k, v in m["metadata"].items())
        parts.append(f"<metadata>{meta}</metadata>" if meta else "<metadata/>")
        parts.append(_xml("isBreakout", m["isBreakout"]))
        body = "".join(parts)
        return f"<{wrap}>{body}</{wrap}>" if wrap else body


# --------------------------------------------------------------------------- #
# HTTP handler
# --------------------------------------------------------------------------- #


class StandinHandler(BaseHTTPRequestHandler):
    server_version = "bbb-api-standin/1"

    # Set on the server object: properties_path, state, delay_ms, malformed.
    def log_message(self, format, *args):
        # Never log the query string (checksums, passwords of test meetings).
        path = urllib.parse.urlsplit(getattr(self, "path", "") or "").path
        log.debug("%s %s %s", self.address_string(), getattr(self, "command", "-"), path)

    def _send(self, status, body="", content_type="text/xml;charset=utf-8", headers=()):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        srv = self.server
        if srv.delay_ms:
            time.sleep(srv.delay_ms / 1000.0)
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        if path.rstrip("/") == API_PREFIX:
            call = "index"
        elif path.startswith(API_PREFIX + "/"):
            call = path[len(API_PREFIX) + 1 :]
        else:
            self._send(404, "Not Found\n", "text/plain")
            return
        if srv.malformed:
            self._send(200, "<response><returncode>SUCCESS</returncode><version>2.0</vers")
            return
        try:
            props = read_properties(srv.properties_path)
        except OSError as exc:
            log.error("cannot read properties %s: %s", srv.properties_path, exc)
            self._send(500, "properties file unreadable\n", "text/plain")
            return
        salt = props.get("securitySalt", "")
        supported = props.get("supportedChecksumAlgorithms", DEFAULT_ALGORITHMS)
        if call == "index":
            self._send(200, self._index())
            return
        handler = getattr(self, "api_" + call, None)
        if handler is None:
            self._send(404, "Not Found\n", "text/plain")
            return
        if not verify_checksum(call, parts.query, salt, supported):
            self._send(200, failed("checksumError", "Checksums do not match"))
            return
        params = {
            k: v[0] for k, v in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items()
        }
        params.pop("checksum", None)
        status, body, headers = handler(params)
        self._send(status, body, headers=headers)

    # -- calls ------------------------------------------------------------ #

    def _index(self):
        host = self.headers.get("Host", "localhost")
        return response_xml(
            "SUCCESS",
            [
                ("version", API_VERSION),
                ("apiVersion", API_VERSION),
                ("bbbVersion", self.server.state.bbb_version),
                ("graphqlWebsocketUrl", f"wss://{host}/graphql"),
                ("graphqlApiUrl", f"https://{host}/api/rest"),
            ],
        )

    def _client_base(self):
        try:
            props_url = read_properties(self.server.properties_path).get(
                "bigbluebutton.web.serverURL"
            )
        except OSError:
            props_url = None
        return (props_url or f"https://{self.headers.get('Host', 'localhost')}").rstrip("/")

    def api_create(self, p):
        meeting_id = (p.get("meetingID") or "").strip()
        if not meeting_id:
            return (
                200,
                failed("missingParamMeetingID", "You must specify a meeting ID for the meeting."),
                (),
            )
        p["meetingID"] = meeting_id
        state = self.server.state
        with state.lock:
            existing = state.meetings.get(meeting_id)
            if existing is None:
                m = state.new_meeting(p)
                state.meetings[meeting_id] = m
                key = msg = None
            else:
                same = existing["attendeePW"] == p.get("attendeePW") and existing[
                    "moderatorPW"
                ] == p.get("moderatorPW")
                if not same and (p.get("attendeePW") or p.get("moderatorPW")):
                    return (
                        200,
                        failed(
                            "idNotUnique",
                            "A meeting already exists with that meeting "
                            "ID.  Please use a different meeting ID.",
                        ),
                        (),
                    )
                m = existing
                key = "duplicateWarning"
                msg = "This conference was already in existence and may currently be in progress."
            fields = [
                (k, m[k])
                for k in (
                    "meetingID",
                    "internalMeetingID",
                    "attendeePW",
                    "moderatorPW",
                    "createTime",
                    "voiceBridge",
                    "dialNumber",
                    "createDate",
                    "hasUserJoined",
                    "duration",
                    "hasBeenForciblyEnded",
                )
            ]
            fields.insert(2, ("parentMeetingID", "bbb-none"))
        return 200, response_xml("SUCCESS", fields, key, msg), ()

    def api_join(self, p):
        meeting_id = (p.get("meetingID") or "").strip()
        full_name = (p.get("fullName") or "").strip()
        if not full_name:
            return (
                200,
                failed(
                    "missingParamFullName",
                    "You must specify a name for the attendee who will be joining the meeting.",
                ),
                (),
            )
        state = self.server.state
        with state.lock:
            m = state.meetings.get(meeting_id)
            if m is None:
                return (
                    200,
                    failed("notFound", "We could not find a meeting with that meeting ID"),
                    (),
                )
            role = {"moderator": "MODERATOR", "viewer": "VIEWER"}.get((p.get("role") or "").lower())
            if role is None:
                if p.get("password") == m["moderatorPW"]:
                    role = "MODERATOR"
                elif p.get("password") == m["attendeePW"]:
                    role = "VIEWER"
                else:
                    # bbb-web 3.0 answers this case with this (odd) messageKey.
                    return 200, failed("Params required", "You must enter a valid password"), ()
            user_id = "w_" + _token(12)
            session_token = _token(16)
            m["attendees"].append(
                {
                    "userID": p.get("userID") or user_id,
                    "fullName": full_name,
                    "role": role,
                    "isPresenter": False,
                    "isListeningOnly": False,
                    "hasJoinedVoice": False,
                    "hasVideo": False,
                    "clientType": "HTML5",
                }
            )
            m["participantCount"] += 1
            if role == "MODERATOR":
                m["moderatorCount"] += 1
            m["running"] = True
            m["hasUserJoined"] = True
            internal = m["internalMeetingID"]
        url = f"{self._client_base()}/html5client/join?sessionToken={session_token}"
        redirect = True if not p.get("redirect") else _parse_boolean(p.get("redirect"))
        if redirect:
            return 302, "", (("Location", url),)
        return (
            200,
            response_xml(
                "SUCCESS",
                [
                    ("meeting_id", internal),
                    ("user_id", user_id),
                    ("auth_token", _token(12)),
                    ("session_token", session_token),
                    ("guestStatus", "ALLOW"),
                    ("url", url),
                ],
                "successfullyJoined",
                "You have joined successfully.",
            ),
            (),
        )

    def api_isMeetingRunning(self, p):
        state = self.server.state
        with state.lock:
            m = state.meetings.get((p.get("meetingID") or "").strip())
            running = bool(m and m["running"])
        return 200, response_xml("SUCCESS", [("running", running)]), ()

    def api_getMeetingInfo(self, p):
        state = self.server.state
        with state.lock:
            m = state.meetings.get((p.get("meetingID") or "").strip())
            if m is None:
                return (
                    200,
                    failed("notFound", "We could not find a meeting with that meeting ID"),
                    (),
                )
            body = state.meeting_xml(m, wrap=None)
        return 200, response_xml("SUCCESS", raw=body), ()

    def api_getMeetings(self, p):
        state = self.server.state
        with state.lock:
            inner = "".join(state.meeting_xml(m) for m in state.meetings.values())
        if not inner:
            return (
                200,
                response_xml(
                    "SUCCESS",
                    raw="<meetings/>",
                    message_key="noMeetings",
                    message="no meetings were found on this server",
                ),
                (),
            )
        return 200, response_xml("SUCCESS", raw=f"<meetings>{inner}</meetings>"), ()

    def api_end(self, p):
        state = self.server.state
        with state.lock:
            m = state.meetings.pop((p.get("meetingID") or "").strip(), None)
        if m is None:
            return 200, failed("notFound", "We could not find a meeting with that meeting ID"), ()
        return (
            200,
            response_xml(
                "SUCCESS",
                message_key="sentEndMeetingRequest",
                message="A request to end the meeting was sent.  Please wait a few seconds, "
                "and then use the getMeetingInfo or isMeetingRunning API calls "
                "to verify that it was ended.",
            ),
            (),
        )

    def api_getRecordings(self, p):
        return (
            200,
            response_xml(
                "SUCCESS",
                raw="<recordings/>",
                message_key="noRecordings",
                message="There are no recordings for the meeting(s).",
            ),
            (),
        )


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address,
        properties_path,
        *,
        delay_ms=0,
        malformed=False,
        bbb_version=DEFAULT_BBB_VERSION,
        state=None,
    ):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, StandinHandler)
        self.properties_path = properties_path
        self.delay_ms = delay_ms
        self.malformed = malformed
        self.state = state or StandinState(bbb_version)


def make_server(properties_path, bind="127.0.0.1", port=0, **kwargs):
    """Create (not start) a server; ``port=0`` picks a free port (see server_port)."""
    return StandinServer((bind, port), properties_path, **kwargs)


def serve_many(servers, stop_event, poll=0.2):
    """Serve several StandinServers from one thread (one selector for all sockets)."""
    sel = selectors.DefaultSelector()
    for srv in servers:
        sel.register(srv.socket, selectors.EVENT_READ, srv)
    try:
        while not stop_event.is_set():
            for key, _ in sel.select(poll):
                key.data._handle_request_noblock()
    finally:
        sel.close()


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="TEST DOUBLE of BBB's bbb-web API for tests and the lab (not BBB)."
    )
    ap.add_argument(
        "--properties",
        required=True,
        help="bbb-web.properties to read securitySalt/supportedChecksumAlgorithms "
        "from (re-read on every request)",
    )
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8090, help="port (default 8090; 0 = any free port)")
    ap.add_argument(
        "--bbb-version",
        default=DEFAULT_BBB_VERSION,
        help=f"bbbVersion reported by the index call (default {DEFAULT_BBB_VERSION})",
    )
    ap.add_argument(
        "--delay-ms", type=int, default=0, help="test hook: delay every answer by N milliseconds"
    )
    ap.add_argument(
        "--malformed",
        action="store_true",
        help="test hook: answer every API request with broken XML",
    )
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    srv = make_server(
        args.properties,
        args.bind,
        args.port,
        delay_ms=args.delay_ms,
        malformed=args.malformed,
        bbb_version=args.bbb_version,
    )
    host, port = srv.server_address[:2]
    print(f"bbb-api-standin listening on {host}:{port}{API_PREFIX}/", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
