"""Unit tests for module_utils/stun.py: RFC 5769 vectors and codec round trips."""

import base64
import hashlib
import hmac
import struct

import pytest
from ansible.module_utils import stun


def h(text: str) -> bytes:
    """Hex dump (as printed in RFC 5769, with braces/comments removed) -> bytes."""
    return bytes.fromhex("".join(text.split()))


# RFC 5769 section 2.1: sample request (short-term credential).
SAMPLE_REQUEST = h(
    """
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
    """
)
SAMPLE_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"

# RFC 5769 section 2.2: sample IPv4 response.
SAMPLE_IPV4_RESPONSE = h(
    """
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
    """
)

# RFC 5769 section 2.3: sample IPv6 response.
SAMPLE_IPV6_RESPONSE = h(
    """
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
    """
)

# RFC 5769 section 2.4: request with long-term authentication (no FINGERPRINT).
LONG_TERM_REQUEST = h(
    """
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46
                53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66
    """
)
TID = h("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")


# -- RFC 5769 test vectors ---------------------------------------------------


def test_rfc5769_sample_request_decodes_and_verifies():
    msg = stun.Message.decode(SAMPLE_REQUEST)
    assert msg.method == stun.METHOD_BINDING
    assert msg.msg_class == stun.CLASS_REQUEST
    assert msg.transaction_id == TID
    assert msg.get_text(stun.ATTR_SOFTWARE) == "STUN test client"
    assert msg.get_text(stun.ATTR_USERNAME) == "evtj:h6vY"
    assert msg.get(stun.ATTR_PRIORITY) == h("6e 00 01 ff")
    assert msg.get(stun.ATTR_ICE_CONTROLLED) == h("93 2f f9 b1 51 26 3b 36")
    # Short-term credential: the key is the password itself.
    assert msg.check_integrity(SAMPLE_PASSWORD)
    assert not msg.check_integrity(b"wrong password")
    assert msg.check_fingerprint()


def test_rfc5769_sample_request_reencodes_byte_for_byte():
    # The RFC pads USERNAME with spaces (padding content is arbitrary).
    msg = stun.Message.decode(SAMPLE_REQUEST)
    again = stun.Message(msg.method, msg.msg_class, msg.transaction_id, msg.attributes)
    assert again.encode(SAMPLE_PASSWORD, fingerprint=True, pad_byte=b" ") == SAMPLE_REQUEST


def test_rfc5769_ipv4_response():
    msg = stun.Message.decode(SAMPLE_IPV4_RESPONSE)
    assert msg.method == stun.METHOD_BINDING
    assert msg.msg_class == stun.CLASS_SUCCESS
    assert msg.get_text(stun.ATTR_SOFTWARE) == "test vector"
    assert msg.get_address(stun.ATTR_XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert msg.check_integrity(SAMPLE_PASSWORD)
    assert msg.check_fingerprint()
    again = stun.Message(msg.method, msg.msg_class, msg.transaction_id, msg.attributes)
    assert again.encode(SAMPLE_PASSWORD, fingerprint=True, pad_byte=b" ") == SAMPLE_IPV4_RESPONSE


def test_rfc5769_ipv6_response():
    msg = stun.Message.decode(SAMPLE_IPV6_RESPONSE)
    assert msg.get_address(stun.ATTR_XOR_MAPPED_ADDRESS) == (
        "2001:db8:1234:5678:11:2233:4455:6677",
        32853,
    )
    assert msg.check_integrity(SAMPLE_PASSWORD)
    assert msg.check_fingerprint()
    again = stun.Message(msg.method, msg.msg_class, msg.transaction_id, msg.attributes)
    assert again.encode(SAMPLE_PASSWORD, fingerprint=True, pad_byte=b" ") == SAMPLE_IPV6_RESPONSE


def test_rfc5769_long_term_request():
    msg = stun.Message.decode(LONG_TERM_REQUEST)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # "matrix" in katakana
    assert msg.get_text(stun.ATTR_USERNAME) == username
    assert msg.get_text(stun.ATTR_NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get_text(stun.ATTR_REALM) == "example.org"
    # Password "The<U+00AD>M<U+00AA>tr<U+2168>" is "TheMatrIX" after SASLprep.
    key = stun.long_term_key(username, "example.org", "TheMatrIX")
    assert (
        key
        == hashlib.md5(f"{username}:example.org:TheMatrIX".encode(), usedforsecurity=False).digest()
    )
    assert msg.check_integrity(key)
    assert not msg.check_integrity(stun.long_term_key(username, "example.org", "thematrix"))
    assert msg.get(stun.ATTR_FINGERPRINT) is None
    assert not msg.check_fingerprint()
    again = stun.Message(msg.method, msg.msg_class, msg.transaction_id, msg.attributes)
    assert again.encode(key) == LONG_TERM_REQUEST


def test_tampered_vector_fails_checks():
    data = bytearray(SAMPLE_IPV4_RESPONSE)
    data[30] ^= 0x01  # flip a bit in the XOR-MAPPED-ADDRESS
    msg = stun.Message.decode(bytes(data))
    assert not msg.check_integrity(SAMPLE_PASSWORD)
    assert not msg.check_fingerprint()


# -- message type ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "msg_class", "expected"),
    [
        (stun.METHOD_BINDING, stun.CLASS_REQUEST, 0x0001),
        (stun.METHOD_BINDING, stun.CLASS_SUCCESS, 0x0101),
        (stun.METHOD_BINDING, stun.CLASS_ERROR, 0x0111),
        (stun.METHOD_ALLOCATE, stun.CLASS_REQUEST, 0x0003),
        (stun.METHOD_ALLOCATE, stun.CLASS_SUCCESS, 0x0103),
        (stun.METHOD_ALLOCATE, stun.CLASS_ERROR, 0x0113),
        (stun.METHOD_REFRESH, stun.CLASS_REQUEST, 0x0004),
        (stun.METHOD_SEND, stun.CLASS_INDICATION, 0x0016),
        (stun.METHOD_DATA, stun.CLASS_INDICATION, 0x0017),
        (stun.METHOD_CREATE_PERMISSION, stun.CLASS_REQUEST, 0x0008),
        (stun.METHOD_CREATE_PERMISSION, stun.CLASS_ERROR, 0x0118),
        (stun.METHOD_CHANNEL_BIND, stun.CLASS_SUCCESS, 0x0109),
        (0xFFF, stun.CLASS_ERROR, 0x3FFF),
    ],
)
def test_message_type_round_trip(method, msg_class, expected):
    assert stun.message_type(method, msg_class) == expected
    assert stun.split_message_type(expected) == (method, msg_class)


def test_method_out_of_range():
    with pytest.raises(ValueError, match="method"):
        stun.message_type(0x1000, stun.CLASS_REQUEST)


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    "attr",
    [stun.ATTR_XOR_MAPPED_ADDRESS, stun.ATTR_XOR_RELAYED_ADDRESS, stun.ATTR_XOR_PEER_ADDRESS],
)
@pytest.mark.parametrize(
    ("ip", "port"), [("203.0.113.7", 3478), ("::1", 5349), ("fe80::1:2:3:4", 65535)]
)
def test_xor_address_round_trip(attr, ip, port):
    msg = stun.Message(stun.METHOD_ALLOCATE, stun.CLASS_SUCCESS)
    msg.add_address(attr, ip, port)
    decoded = stun.Message.decode(msg.encode())
    assert decoded.get_address(attr) == (ip, port)
    # XOR really is applied: the raw bytes differ from the plain address.
    assert decoded.get(attr)[4:] != stun.encode_address(ip, port, xor=False)[4:]


def test_plain_mapped_address_round_trip():
    msg = stun.Message(stun.METHOD_BINDING, stun.CLASS_SUCCESS)
    msg.add_address(stun.ATTR_MAPPED_ADDRESS, "198.51.100.2", 1234)
    value = stun.Message.decode(msg.encode()).get(stun.ATTR_MAPPED_ADDRESS)
    assert value == h("00 01 04 d2 c6 33 64 02")
    assert stun.decode_address(value, xor=False) == ("198.51.100.2", 1234)


def test_full_request_round_trip_with_integrity_and_fingerprint():
    key = stun.long_term_key("1700000000:probe", "turn.example.org", "pw")
    msg = stun.Message(stun.METHOD_ALLOCATE)
    msg.add(stun.ATTR_REQUESTED_TRANSPORT, stun.encode_requested_transport())
    msg.add(stun.ATTR_LIFETIME, stun.encode_lifetime(600))
    msg.add_text(stun.ATTR_USERNAME, "1700000000:probe")
    msg.add_text(stun.ATTR_REALM, "turn.example.org")
    msg.add_text(stun.ATTR_NONCE, "abcdef")
    data = msg.encode(integrity_key=key, fingerprint=True)
    assert len(data) % 4 == 0
    assert struct.unpack("!H", data[2:4])[0] == len(data) - 20
    decoded = stun.Message.decode(data)
    assert decoded.method == stun.METHOD_ALLOCATE
    assert decoded.transaction_id == msg.transaction_id
    assert decoded.get(stun.ATTR_REQUESTED_TRANSPORT) == b"\x11\x00\x00\x00"
    assert stun.decode_lifetime(decoded.get(stun.ATTR_LIFETIME)) == 600
    assert decoded.get_text(stun.ATTR_REALM) == "turn.example.org"
    assert decoded.check_integrity(key)
    assert decoded.check_fingerprint()
    # MESSAGE-INTEGRITY then FINGERPRINT are the last two attributes.
    assert [t for t, _ in decoded.attributes][-2:] == [
        stun.ATTR_MESSAGE_INTEGRITY,
        stun.ATTR_FINGERPRINT,
    ]


def test_transaction_ids_are_random_12_bytes():
    ids = {stun.new_transaction_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 12 for i in ids)


# -- error codes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (401, "Unauthorized"),
        (403, "Forbidden IP"),
        (437, "Allocation Mismatch"),
        (438, "Stale Nonce"),
        (441, "Wrong Credentials"),
        (486, "Allocation Quota Reached"),
        (508, "Insufficient Capacity"),
    ],
)
def test_error_code_round_trip(code, reason):
    msg = stun.Message(stun.METHOD_ALLOCATE, stun.CLASS_ERROR)
    msg.add(stun.ATTR_ERROR_CODE, stun.encode_error_code(code, reason))
    assert stun.Message.decode(msg.encode()).error() == (code, reason)


def test_error_code_wire_format():
    # RFC 5389 section 15.6: class in the low 3 bits of byte 2, number in byte 3.
    assert stun.encode_error_code(403, "Forbidden") == b"\x00\x00\x04\x03Forbidden"
    assert stun.decode_error_code(b"\x00\x00\x04\x01Unauthorized") == (401, "Unauthorized")
    # Reserved bits above the class are ignored.
    assert stun.decode_error_code(b"\xff\xff\xfc\x26x") == (438, "x")


def test_error_code_bounds():
    with pytest.raises(ValueError):
        stun.encode_error_code(200, "OK")
    with pytest.raises(stun.StunError):
        stun.decode_error_code(b"\x00\x00")


def test_no_error_on_success():
    assert stun.Message(stun.METHOD_BINDING, stun.CLASS_SUCCESS).error() is None


# -- malformed input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x01\x00", "shorter"),
        (b"\xc0\x01\x00\x00" + stun.MAGIC_COOKIE_BYTES + b"\x00" * 12, "first two bits"),
        (b"\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x00" * 12, "magic cookie"),
        (b"\x00\x01\x00\x08" + stun.MAGIC_COOKIE_BYTES + b"\x00" * 12, "length"),
        (b"\x00\x01\x00\x03" + stun.MAGIC_COOKIE_BYTES + b"\x00" * 15, "length"),
        (
            b"\x00\x01\x00\x04" + stun.MAGIC_COOKIE_BYTES + b"\x00" * 12 + b"\x00\x06\x00\x10",
            "past the end",
        ),
    ],
)
def test_malformed_messages_are_rejected(data, match):
    with pytest.raises(stun.StunError, match=match):
        stun.Message.decode(data)


def test_bad_address_family():
    with pytest.raises(stun.StunError, match="family"):
        stun.decode_address(b"\x00\x03\x00\x00\x00\x00\x00\x00")


def test_transaction_id_length_checked():
    with pytest.raises(ValueError):
        stun.Message(stun.METHOD_BINDING, transaction_id=b"short")


# -- credentials ---------------------------------------------------------------


def test_rest_credentials_match_coturn_formula():
    secret = "north"
    username, password = stun.rest_credentials(secret, "alice", ttl=3600, now=1_700_000_000)
    assert username == "1700003600:alice"
    expected = base64.b64encode(
        hmac.new(b"north", b"1700003600:alice", hashlib.sha1).digest()
    ).decode()
    assert password == expected
    assert len(base64.b64decode(password)) == 20


def test_rest_credentials_known_value():
    # Independent value computed once with `openssl dgst -sha1 -hmac`:
    # printf '1234567890:user' | openssl dgst -sha1 -hmac secret -binary | base64
    username, password = stun.rest_credentials("secret", "user", ttl=0, now=1234567890)
    assert username == "1234567890:user"
    assert password == "tHbOsg6j8vjx6g3+R1ACZpLMHG0="


def test_rest_credentials_without_user_suffix():
    username, _ = stun.rest_credentials("s", "", ttl=10, now=100)
    assert username == "110"


def test_rest_credentials_negative_ttl_gives_expired_username():
    username, _ = stun.rest_credentials("s", "u", ttl=-60, now=1000)
    assert username == "940:u"


def test_long_term_key():
    assert (
        stun.long_term_key("user", "realm", "pass")
        == hashlib.md5(b"user:realm:pass", usedforsecurity=False).digest()
    )


def test_tls_context_defaults_verify():
    import ssl

    ctx = stun.make_tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    loose = stun.make_tls_context(validate_certs=False)
    assert loose.verify_mode == ssl.CERT_NONE
    assert not loose.check_hostname
