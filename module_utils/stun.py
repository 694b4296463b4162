# Copyright: SmeetOn contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small STUN/TURN codec and client (standard library only).

Implements the parts of STUN (RFC 5389 / RFC 8489) and TURN (RFC 5766 /
RFC 8656) that a health check needs:

* message header with magic cookie and 96-bit transaction id;
* the attributes MAPPED-ADDRESS, XOR-MAPPED-ADDRESS, XOR-RELAYED-ADDRESS,
  XOR-PEER-ADDRESS, USERNAME, REALM, NONCE, LIFETIME, REQUESTED-TRANSPORT,
  ERROR-CODE, SOFTWARE, MESSAGE-INTEGRITY (HMAC-SHA1) and FINGERPRINT
  (CRC-32 xor 0x5354554e);
* long-term credentials (key = MD5(username ":" realm ":" password)) and
  the "TURN REST API" time-limited credentials used by coturn's
  ``use-auth-secret`` (username ``EXPIRY:user``, password
  ``base64(HMAC-SHA1(secret, username))``);
* a client over UDP, TCP (RFC 5389 section 7.2.2 framing) and TLS, with
  Binding, Allocate (401 challenge then authenticated retry), CreatePermission
  and Refresh (lifetime 0 deallocates).

Runs on Python 3.10+ (Ubuntu 22.04 hosts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import struct
import time

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

# Methods (RFC 5389 section 18.1, RFC 5766 section 13).
METHOD_BINDING = 0x001
METHOD_ALLOCATE = 0x003
METHOD_REFRESH = 0x004
METHOD_SEND = 0x006
METHOD_DATA = 0x007
METHOD_CREATE_PERMISSION = 0x008
METHOD_CHANNEL_BIND = 0x009

# Classes, as the C1/C0 bits placed in the message type.
CLASS_REQUEST = 0x000
CLASS_INDICATION = 0x010
CLASS_SUCCESS = 0x100
CLASS_ERROR = 0x110

# Attributes.
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_CHANNEL_NUMBER = 0x000C
ATTR_LIFETIME = 0x000D
ATTR_XOR_PEER_ADDRESS = 0x0012
ATTR_DATA = 0x0013
ATTR_REALM = 0x0014
ATTR_NONCE = 0x0015
ATTR_XOR_RELAYED_ADDRESS = 0x0016
ATTR_REQUESTED_ADDRESS_FAMILY = 0x0017  # RFC 6156 / RFC 8656
ATTR_REQUESTED_TRANSPORT = 0x0019
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PRIORITY = 0x0024
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_ICE_CONTROLLED = 0x8029

ATTRIBUTE_NAMES = {
    ATTR_MAPPED_ADDRESS: "MAPPED-ADDRESS",
    ATTR_USERNAME: "USERNAME",
    ATTR_MESSAGE_INTEGRITY: "MESSAGE-INTEGRITY",
    ATTR_ERROR_CODE: "ERROR-CODE",
    ATTR_UNKNOWN_ATTRIBUTES: "UNKNOWN-ATTRIBUTES",
    ATTR_CHANNEL_NUMBER: "CHANNEL-NUMBER",
    ATTR_LIFETIME: "LIFETIME",
    ATTR_XOR_PEER_ADDRESS: "XOR-PEER-ADDRESS",
    ATTR_DATA: "DATA",
    ATTR_REALM: "REALM",
    ATTR_NONCE: "NONCE",
    ATTR_XOR_RELAYED_ADDRESS: "XOR-RELAYED-ADDRESS",
    ATTR_REQUESTED_ADDRESS_FAMILY: "REQUESTED-ADDRESS-FAMILY",
    ATTR_REQUESTED_TRANSPORT: "REQUESTED-TRANSPORT",
    ATTR_XOR_MAPPED_ADDRESS: "XOR-MAPPED-ADDRESS",
    ATTR_PRIORITY: "PRIORITY",
    ATTR_SOFTWARE: "SOFTWARE",
    ATTR_FINGERPRINT: "FINGERPRINT",
    ATTR_ICE_CONTROLLED: "ICE-CONTROLLED",
}

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

TRANSPORT_UDP = 17  # REQUESTED-TRANSPORT protocol number (RFC 5766 section 14.7)

DEFAULT_SOFTWARE = "SmeetOn turn_check"


class StunError(Exception):
    """A STUN error response, or a malformed / missing answer (code None)."""

    def __init__(self, message: str, code: int | None = None, reason: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason


# --------------------------------------------------------------------------
# Message type helpers
# --------------------------------------------------------------------------


def message_type(method: int, msg_class: int) -> int:
    """Combine a 12-bit method and a class into the 14-bit STUN message type."""
    if method > 0xFFF:
        raise ValueError("STUN method out of range")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | (msg_class & CLASS_ERROR)
    )


def split_message_type(msg_type: int) -> tuple[int, int]:
    """Return (method, class) of a message type."""
    msg_class = msg_type & CLASS_ERROR
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    return method, msg_class


def new_transaction_id() -> bytes:
    return os.urandom(12)


# --------------------------------------------------------------------------
# Attribute value codecs
# --------------------------------------------------------------------------


def _pad4(length: int) -> int:
    return (4 - length % 4) % 4


def encode_address(
    ip: str, port: int, xor: bool = True, transaction_id: bytes = b"\x00" * 12
) -> bytes:
    """Encode a (XOR-)MAPPED-ADDRESS style value."""
    addr = ipaddress.ip_address(ip)
    packed = addr.packed
    family = FAMILY_IPV4 if addr.version == 4 else FAMILY_IPV6
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = MAGIC_COOKIE_BYTES + transaction_id
        packed = bytes(b ^ mask[i] for i, b in enumerate(packed))
    return struct.pack("!BBH", 0, family, port) + packed


def decode_address(
    value: bytes, xor: bool = True, transaction_id: bytes = b"\x00" * 12
) -> tuple[str, int]:
    """Decode a (XOR-)MAPPED-ADDRESS style value into (ip, port)."""
    if len(value) < 8:
        raise StunError("address attribute too short")
    _, family, port = struct.unpack("!BBH", value[:4])
    if family == FAMILY_IPV4:
        packed = value[4:8]
    elif family == FAMILY_IPV6:
        if len(value) < 20:
            raise StunError("IPv6 address attribute too short")
        packed = value[4:20]
    else:
        raise StunError(f"unknown address family {family}")
    if xor:
        port ^= MAGIC_COOKIE >> 16
        mask = MAGIC_COOKIE_BYTES + transaction_id
        packed = bytes(b ^ mask[i] for i, b in enumerate(packed))
    return str(ipaddress.ip_address(packed)), port


def encode_error_code(code: int, reason: str) -> bytes:
    if not 300 <= code <= 699:
        raise ValueError("STUN error code must be 300-699")
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def decode_error_code(value: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise StunError("ERROR-CODE attribute too short")
    klass = value[2] & 0x07
    number = value[3]
    return klass * 100 + number, value[4:].decode("utf-8", errors="replace")


def encode_lifetime(seconds: int) -> bytes:
    return struct.pack("!I", seconds)


def decode_lifetime(value: bytes) -> int:
    return struct.unpack("!I", value[:4])[0]


def encode_requested_transport(protocol: int = TRANSPORT_UDP) -> bytes:
    return struct.pack("!B3x", protocol)


# --------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """Long-term credential key: MD5(username ":" realm ":" SASLprep(password)).

    SASLprep is not implemented (not in the standard library); it is the
    identity for the ASCII credentials that the TURN REST scheme produces.
    """
    return hashlib.md5(  # noqa: S324 - mandated by RFC 5389 section 15.4
        f"{username}:{realm}:{password}".encode()
    ).digest()


def rest_credentials(
    secret: str, user: str = "", ttl: int = 86400, now: float | None = None
) -> tuple[str, str]:
    """TURN REST API credentials as coturn's ``use-auth-secret`` checks them.

    Username is ``EXPIRY`` or ``EXPIRY:user`` (EXPIRY = unix time at which the
    credential stops being valid); password is
    ``base64(HMAC-SHA1(secret, username))``.
    """
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}" if user else str(expiry)
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


# --------------------------------------------------------------------------
# Message
# --------------------------------------------------------------------------


class Message:
    """A STUN message: type, transaction id and ordered attributes."""

    def __init__(
        self,
        method: int,
        msg_class: int = CLASS_REQUEST,
        transaction_id: bytes | None = None,
        attributes: list[tuple[int, bytes]] | None = None,
    ):
        self.method = method
        self.msg_class = msg_class
        self.transaction_id = transaction_id if transaction_id is not None else new_transaction_id()
        if len(self.transaction_id) != 12:
            raise ValueError("transaction id must be 12 bytes")
        self.attributes: list[tuple[int, bytes]] = list(attributes or [])
        self.raw: bytes | None = None
        # Offsets (from message start) of each decoded attribute header.
        self._offsets: list[int] = []

    # -- building -----------------------------------------------------------
    def add(self, attr_type: int, value: bytes) -> Message:
        self.attributes.append((attr_type, value))
        return self

    def add_text(self, attr_type: int, text: str) -> Message:
        return self.add(attr_type, text.encode("utf-8"))

    def add_address(self, attr_type: int, ip: str, port: int) -> Message:
        xor = attr_type != ATTR_MAPPED_ADDRESS
        return self.add(attr_type, encode_address(ip, port, xor, self.transaction_id))

    @property
    def msg_type(self) -> int:
        return message_type(self.method, self.msg_class)

    def _attrs_bytes(self, attributes, pad_byte: bytes = b"\x00") -> bytes:
        out = bytearray()
        for attr_type, value in attributes:
            out += struct.pack("!HH", attr_type, len(value)) + value
            out += pad_byte * _pad4(len(value))
        return bytes(out)

    def encode(
        self,
        integrity_key: bytes | None = None,
        fingerprint: bool = False,
        pad_byte: bytes = b"\x00",
    ) -> bytes:
        """Serialise; optionally append MESSAGE-INTEGRITY then FINGERPRINT."""
        attrs = [
            (t, v)
            for t, v in self.attributes
            if t not in (ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT)
        ]
        body = self._attrs_bytes(attrs, pad_byte)
        head = struct.pack("!HH", self.msg_type, 0) + MAGIC_COOKIE_BYTES + self.transaction_id
        if integrity_key is not None:
            length = len(body) + 24
            header = head[:2] + struct.pack("!H", length) + head[4:]
            mac = hmac.new(integrity_key, header + body, hashlib.sha1).digest()
            body += struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, 20) + mac
        if fingerprint:
            length = len(body) + 8
            header = head[:2] + struct.pack("!H", length) + head[4:]
            crc = (binascii.crc32(header + body) & 0xFFFFFFFF) ^ FINGERPRINT_XOR
            body += struct.pack("!HHI", ATTR_FINGERPRINT, 4, crc)
        return head[:2] + struct.pack("!H", len(body)) + head[4:] + body

    # -- parsing ------------------------------------------------------------
    @classmethod
    def decode(cls, data: bytes) -> Message:
        if len(data) < HEADER_LENGTH:
            raise StunError("message shorter than a STUN header")
        msg_type, length = struct.unpack("!HH", data[:4])
        if msg_type & 0xC000:
            raise StunError("not a STUN message (first two bits not zero)")
        if data[4:8] != MAGIC_COOKIE_BYTES:
            raise StunError("bad magic cookie")
        if length % 4 or len(data) < HEADER_LENGTH + length:
            raise StunError("bad STUN message length")
        method, msg_class = split_message_type(msg_type)
        msg = cls(method, msg_class, data[8:20])
        msg.raw = bytes(data[: HEADER_LENGTH + length])
        pos = HEADER_LENGTH
        end = HEADER_LENGTH + length
        while pos + 4 <= end:
            attr_type, attr_len = struct.unpack("!HH", data[pos : pos + 4])
            if pos + 4 + attr_len > end:
                raise StunError("attribute runs past the end of the message")
            msg.attributes.append((attr_type, bytes(data[pos + 4 : pos + 4 + attr_len])))
            msg._offsets.append(pos)
            pos += 4 + attr_len + _pad4(attr_len)
        return msg

    # -- access -------------------------------------------------------------
    def get(self, attr_type: int) -> bytes | None:
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def get_text(self, attr_type: int) -> str | None:
        value = self.get(attr_type)
        return None if value is None else value.decode("utf-8", errors="replace")

    def get_address(self, attr_type: int) -> tuple[str, int] | None:
        value = self.get(attr_type)
        if value is None:
            return None
        xor = attr_type != ATTR_MAPPED_ADDRESS
        return decode_address(value, xor, self.transaction_id)

    def error(self) -> tuple[int, str] | None:
        value = self.get(ATTR_ERROR_CODE)
        return None if value is None else decode_error_code(value)

    def _offset_of(self, attr_type: int) -> int | None:
        for (t, _), off in zip(self.attributes, self._offsets, strict=False):
            if t == attr_type:
                return off
        return None

    def check_integrity(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY of a decoded message with ``key``."""
        off = self._offset_of(ATTR_MESSAGE_INTEGRITY)
        if off is None or self.raw is None:
            return False
        raw = self.raw
        header = raw[:2] + struct.pack("!H", off + 24 - HEADER_LENGTH) + raw[4:HEADER_LENGTH]
        expected = hmac.new(key, header + raw[HEADER_LENGTH:off], hashlib.sha1).digest()
        return hmac.compare_digest(expected, raw[off + 4 : off + 24])

    def check_fingerprint(self) -> bool:
        off = self._offset_of(ATTR_FINGERPRINT)
        if off is None or self.raw is None:
            return False
        raw = self.raw
        header = raw[:2] + struct.pack("!H", off + 8 - HEADER_LENGTH) + raw[4:HEADER_LENGTH]
        crc = (binascii.crc32(header + raw[HEADER_LENGTH:off]) & 0xFFFFFFFF) ^ FINGERPRINT_XOR
        return struct.unpack("!I", raw[off + 4 : off + 8])[0] == crc

    def __repr__(self) -> str:
        names = [ATTRIBUTE_NAMES.get(t, hex(t)) for t, _ in self.attributes]
        return (
            f"Message(method={self.method:#x}, class={self.msg_class:#x}, "
            f"tid={self.transaction_id.hex()}, attrs={names})"
        )


# --------------------------------------------------------------------------
# Transports
# --------------------------------------------------------------------------


def make_tls_context(ca_path: str | None = None, validate_certs: bool = True) -> ssl.SSLContext:
    """Client TLS context: TLS 1.2+, verification on unless told otherwise."""
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class StunConnection:
    """One client socket (UDP, TCP or TLS) that exchanges STUN transactions."""

    def __init__(
        self,
        host: str,
        port: int,
        transport: str = "udp",
        *,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ):
        transport = transport.lower()
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"unknown transport {transport!r}")
        self.host = host
        self.port = port
        self.transport = transport
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.tls_version: str | None = None
        family, socktype, proto, _, sockaddr = socket.getaddrinfo(
            host,
            port,
            type=socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM,
        )[0]
        self.sockaddr = sockaddr
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(timeout)
        try:
            if transport == "udp":
                sock.connect(sockaddr)
            else:
                sock.connect(sockaddr)
                if transport == "tls":
                    ctx = ssl_context or make_tls_context()
                    sock = ctx.wrap_socket(sock, server_hostname=server_hostname or host)
                    self.tls_version = sock.version()
        except (OSError, ssl.SSLError):
            sock.close()
            raise
        self.sock = sock
        self._buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self) -> StunConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- stream framing -----------------------------------------------------
    def _recv_exact(self, n: int, deadline: float) -> bytes:
        assert self.sock is not None
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out waiting for a STUN response")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise StunError("connection closed by the server")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _recv_stream_message(self, deadline: float) -> bytes:
        head = self._recv_exact(4, deadline)
        if head[0] & 0xC0 == 0x40:  # ChannelData (RFC 5766 section 11.4): skip it
            length = struct.unpack("!H", head[2:4])[0]
            self._recv_exact(length + _pad4(length), deadline)
            return b""
        length = struct.unpack("!H", head[2:4])[0]
        return head + self._recv_exact(HEADER_LENGTH - 4 + length, deadline)

    # -- transactions -------------------------------------------------------
    def transact(self, data: bytes, transaction_id: bytes) -> tuple[Message, float]:
        """Send a request and return (response, rtt seconds).

        UDP retransmits with a doubling interval starting at 500 ms
        (RFC 5389 section 7.2.1) until ``timeout`` is used up.
        """
        assert self.sock is not None
        start = time.monotonic()
        deadline = start + self.timeout
        if self.transport == "udp":
            rto = 0.5
            sent_at = time.monotonic()
            self.sock.send(data)
            next_send = sent_at + rto
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError("no STUN response over UDP")
                self.sock.settimeout(max(0.001, min(next_send, deadline) - now))
                try:
                    packet = self.sock.recv(65535)
                except TimeoutError:
                    if time.monotonic() >= next_send:
                        rto *= 2
                        sent_at = time.monotonic()
                        self.sock.send(data)
                        next_send = sent_at + rto
                    continue
                except ConnectionRefusedError as exc:
                    raise StunError("UDP port unreachable (ICMP refused)") from exc
                msg = self._match(packet, transaction_id)
                if msg is not None:
                    return msg, time.monotonic() - sent_at
        else:
            self.sock.sendall(data)
            while True:
                packet = self._recv_stream_message(deadline)
                msg = self._match(packet, transaction_id)
                if msg is not None:
                    return msg, time.monotonic() - start

    @staticmethod
    def _match(packet: bytes, transaction_id: bytes) -> Message | None:
        if len(packet) < HEADER_LENGTH or packet[8:20] != transaction_id:
            return None  # indications, ChannelData or stale answers
        try:
            msg = Message.decode(packet)
        except StunError:
            return None
        if msg.msg_class in (CLASS_SUCCESS, CLASS_ERROR):
            return msg
        return None


# --------------------------------------------------------------------------
# TURN client
# --------------------------------------------------------------------------


class TurnClient:
    """Minimal TURN client for health checks (one allocation per instance)."""

    def __init__(
        self,
        host: str,
        port: int,
        transport: str = "udp",
        *,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        software: str = DEFAULT_SOFTWARE,
    ):
        self.conn = StunConnection(
            host,
            port,
            transport,
            timeout=timeout,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
        )
        self.software = software
        self.username: str | None = None
        self.realm: str | None = None
        self.nonce: str | None = None
        self.key: bytes | None = None
        self.allocated = False
        self.relayed_address: tuple[str, int] | None = None
        self.mapped_address: tuple[str, int] | None = None
        self.lifetime: int | None = None
        self.unauthenticated_allocation = False

    @property
    def tls_version(self) -> str | None:
        return self.conn.tls_version

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> TurnClient:
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.allocated:
                self.refresh(0)
        except (OSError, StunError):
            pass
        self.close()

    def _request(self, msg: Message, authenticate: bool) -> tuple[Message, float]:
        if self.software:
            msg.add_text(ATTR_SOFTWARE, self.software)
        key = None
        if authenticate and self.key is not None:
            msg.add_text(ATTR_USERNAME, self.username or "")
            msg.add_text(ATTR_REALM, self.realm or "")
            msg.add_text(ATTR_NONCE, self.nonce or "")
            key = self.key
        data = msg.encode(integrity_key=key, fingerprint=True)
        return self.conn.transact(data, msg.transaction_id)

    def _authenticated(self, build) -> tuple[Message, float]:
        """Send ``build()`` with credentials; retry once on 438 Stale Nonce."""
        for _ in range(2):
            resp, rtt = self._request(build(), authenticate=True)
            err = resp.error()
            if err and err[0] == 438 and resp.get(ATTR_NONCE) is not None:
                self.nonce = resp.get_text(ATTR_NONCE)
                continue
            return resp, rtt
        return resp, rtt

    @staticmethod
    def _raise_for(resp: Message, what: str) -> None:
        if resp.msg_class == CLASS_ERROR:
            code, reason = resp.error() or (0, "")
            raise StunError(f"{what} refused: {code} {reason}".strip(), code, reason)

    def binding(self) -> dict:
        """Plain STUN Binding request: returns mapped address and rtt."""
        msg = Message(METHOD_BINDING)
        resp, rtt = self._request(msg, authenticate=False)
        self._raise_for(resp, "Binding")
        mapped = resp.get_address(ATTR_XOR_MAPPED_ADDRESS) or resp.get_address(ATTR_MAPPED_ADDRESS)
        return {"mapped_address": mapped, "rtt": rtt}

    def allocate(
        self,
        username: str,
        password: str,
        lifetime: int | None = None,
        family: int | None = None,
    ) -> dict:
        """Allocate a UDP relay: unauthenticated try, 401 challenge, signed retry.

        ``family`` (FAMILY_IPV4 / FAMILY_IPV6) asks for a relay address of that
        family (REQUESTED-ADDRESS-FAMILY); servers default to IPv4.
        """

        def build() -> Message:
            msg = Message(METHOD_ALLOCATE)
            msg.add(ATTR_REQUESTED_TRANSPORT, encode_requested_transport(TRANSPORT_UDP))
            if family is not None:
                msg.add(ATTR_REQUESTED_ADDRESS_FAMILY, struct.pack("!B3x", family))
            if lifetime is not None:
                msg.add(ATTR_LIFETIME, encode_lifetime(lifetime))
            return msg

        resp, rtt_first = self._request(build(), authenticate=False)
        if resp.msg_class == CLASS_SUCCESS:
            # A server that relays without credentials is an open relay.
            self.unauthenticated_allocation = True
            return self._allocated(resp, rtt_first)
        err = resp.error()
        if not err or err[0] != 401:
            self._raise_for(resp, "Allocate")
            raise StunError("Allocate: unexpected answer without error code")
        self.realm = resp.get_text(ATTR_REALM)
        self.nonce = resp.get_text(ATTR_NONCE)
        if self.realm is None or self.nonce is None:
            raise StunError("401 challenge without REALM/NONCE", 401)
        self.username = username
        self.key = long_term_key(username, self.realm, password)
        resp, rtt = self._authenticated(build)
        self._raise_for(resp, "Allocate")
        if not resp.check_integrity(self.key):
            raise StunError("Allocate success response has a bad MESSAGE-INTEGRITY")
        return self._allocated(resp, rtt)

    def _allocated(self, resp: Message, rtt: float) -> dict:
        self.allocated = True
        self.relayed_address = resp.get_address(ATTR_XOR_RELAYED_ADDRESS)
        self.mapped_address = resp.get_address(ATTR_XOR_MAPPED_ADDRESS)
        lifetime = resp.get(ATTR_LIFETIME)
        self.lifetime = decode_lifetime(lifetime) if lifetime else None
        return {
            "relayed_address": self.relayed_address,
            "mapped_address": self.mapped_address,
            "lifetime": self.lifetime,
            "rtt": rtt,
            "realm": self.realm,
        }

    def create_permission(self, peer_ip: str, peer_port: int = 9) -> float:
        """CreatePermission for ``peer_ip``; returns rtt, raises StunError if refused.

        Only a permission is asked for: no data is ever sent to the peer.
        """
        if not self.allocated:
            raise StunError("no allocation")

        def build() -> Message:
            msg = Message(METHOD_CREATE_PERMISSION)
            msg.add_address(ATTR_XOR_PEER_ADDRESS, peer_ip, peer_port)
            return msg

        resp, rtt = self._authenticated(build)
        self._raise_for(resp, f"CreatePermission for {peer_ip}")
        return rtt

    def refresh(self, lifetime: int = 0) -> float:
        """Refresh the allocation; lifetime 0 deletes it."""

        def build() -> Message:
            msg = Message(METHOD_REFRESH)
            msg.add(ATTR_LIFETIME, encode_lifetime(lifetime))
            return msg

        resp, rtt = self._authenticated(build)
        self._raise_for(resp, "Refresh")
        if lifetime == 0:
            self.allocated = False
        return rtt
