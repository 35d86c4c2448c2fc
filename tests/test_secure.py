"""The cluster-key handshake and sealed records (secure.py), sans-IO: test
vectors, tampering, replays, downgrades, and the keyring."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
from typing import Callable, List, Tuple

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

import fastgossip
from fastgossip import AuthError, Keyring, NodeConfig, decode_key, encode_key, generate_key
from fastgossip.secure import (
    HELLO_SIZE,
    MAX_RECORD_PLAINTEXT,
    R_NOT_ENCRYPTED,
    R_UNKNOWN_KEY,
    REFUSED,
    SERVER_HELLO_SIZE,
    SentNonces,
    Session,
    key_id,
    keyring_from_env,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def counter_rand(start: int) -> Callable[[int], bytes]:
    """Deterministic 'random' bytes: start, start+1, ... (for test vectors)."""
    state = [start]

    def rand(n: int) -> bytes:
        out = bytes((state[0] + i) & 0xFF for i in range(n))
        state[0] += n
        return out

    return rand


def handshake(
    client_ring: Keyring, server_ring: Keyring, rc=os.urandom, rs=os.urandom
) -> Tuple[Session, Session, List[bytes]]:
    """Run a handshake to its end; returns both sessions and the wire messages."""
    c = Session(client_ring, initiator=True, rand=rc)
    s = Session(server_ring, initiator=False, rand=rs)
    wire = [c.start()]
    assert s.receive(wire[0]) == b""
    wire.append(s.out)
    assert c.receive(s.out) == b""
    assert c.established
    wire.append(c.out)
    assert s.receive(c.out) == b""
    assert s.established
    return c, s, wire


# -- the handshake ---------------------------------------------------------------
def test_test_vectors_match_protocol_md() -> None:
    """The vectors printed in docs/PROTOCOL.md ("Security"), recomputed here from
    the primitives directly, so that another implementation can check itself."""
    c, s, wire = handshake(
        Keyring([KEY]), Keyring([KEY]), rc=counter_rand(0x40), rs=counter_rand(0x80)
    )
    client_hello, server_msg, finish = wire
    assert key_id(KEY).hex() == "a1af803a9c425745"
    assert client_hello.hex() == (
        "4647534b01010000" + "a1af803a9c425745" + bytes(range(0x40, 0x60)).hex()
    )
    assert server_msg[:HELLO_SIZE].hex() == (
        "4647534b01010000" + "a1af803a9c425745" + bytes(range(0x80, 0xA0)).hex()
    )
    transcript = client_hello + server_msg[:HELLO_SIZE]
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=96,
        salt=bytes(range(0x40, 0x60)) + bytes(range(0x80, 0xA0)),
        info=b"fastgossip v1 session" + transcript,
    ).derive(KEY)
    k_c2s, k_s2c, k_fin = okm[:32], okm[32:64], okm[64:]
    mac_s = hmac.new(k_fin, b"fastgossip v1 server" + transcript, hashlib.sha256).digest()
    mac_c = hmac.new(k_fin, b"fastgossip v1 client" + transcript, hashlib.sha256).digest()
    assert server_msg[HELLO_SIZE:] == mac_s
    assert finish == mac_c
    assert mac_s.hex() == "0ff14779ae621fa5c26acdc9401159717a6df27dae02dfa3dac043c7a1141b9e"
    assert mac_c.hex() == "a59052a31eba13313d1af2d4be15aaab859e977f459adba05ef0e5f796c662a8"
    # the first two records each way: counter nonces, the length as AAD
    record = c.seal(b"hello")
    assert record[:4] == (5 + 16).to_bytes(4, "big")
    assert record[4:] == AESGCM(k_c2s).encrypt(bytes(12), b"hello", record[:4])
    second = c.seal(b"hello")
    assert second[4:] == AESGCM(k_c2s).encrypt((1).to_bytes(12, "big"), b"hello", second[:4])
    assert second != record
    answer = s.seal(b"world")
    assert answer[4:] == AESGCM(k_s2c).encrypt(bytes(12), b"world", answer[:4])
    assert s.receive(record + second) == b"hellohello"
    assert c.receive(answer) == b"world"
    assert record.hex() == "00000015987f2095281b843c4a015ce16415c90d9776427ab5"
    assert answer.hex() == "0000001541998d6d8ce932506690afab0f4caba18795486736"


def test_sessions_carry_data_both_ways_in_any_chunking() -> None:
    c, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    payload = os.urandom(3 * MAX_RECORD_PLAINTEXT + 123)  # split into 4 records
    wire = c.seal(payload)
    assert len(wire) == len(payload) + 4 * (4 + 16)
    rng = random.Random(7)
    got = []
    pos = 0
    while pos < len(wire):
        step = rng.randint(1, 70_000)
        got.append(s.receive(wire[pos : pos + step]))
        pos += step
    assert b"".join(got) == payload
    assert s.buffered == 0
    assert c.receive(s.seal(b"")) == b""  # an empty record is valid, and carries nothing


def test_every_flipped_bit_of_a_record_is_refused() -> None:
    c, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    record = c.seal(b"a value that must not change")
    for i in range(len(record) * 8):
        _, s2, _ = handshake(Keyring([KEY]), Keyring([KEY]))
        s2._open = s._open  # (same keys, fresh counter: only the flip differs)
        s2._recv = 0
        bad = bytearray(record)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            out = s2.receive(bytes(bad))
        except AuthError:
            continue
        # a flipped length bit may only make the record look incomplete
        assert out == b"" and i < 32, i
    assert s.receive(record) == b"a value that must not change"


def test_replayed_reordered_and_dropped_records_are_refused() -> None:
    c, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    r1 = c.seal(b"one")
    assert s.receive(r1) == b"one"
    with pytest.raises(AuthError, match="authentication"):
        s.receive(r1)  # replayed
    _, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    c2, s2, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    a, b = c2.seal(b"a"), c2.seal(b"b")
    with pytest.raises(AuthError):
        s2.receive(b + a)  # reordered
    c3, s3, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    x, _y, z = c3.seal(b"x"), c3.seal(b"y"), c3.seal(b"z")
    assert s3.receive(x) == b"x"
    with pytest.raises(AuthError):
        s3.receive(z)  # one dropped
    with pytest.raises(AuthError):
        s3.receive(x)  # and a failed session stays failed


def test_a_truncated_record_yields_nothing() -> None:
    c, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    record = c.seal(b"0123456789")
    assert s.receive(record[:-1]) == b""
    assert s.buffered == len(record) - 1
    assert s.receive(record[-1:]) == b"0123456789"


def test_a_record_from_another_session_does_not_open() -> None:
    c1, _s1, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    _c2, s2, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    with pytest.raises(AuthError):
        s2.receive(c1.seal(b"from another connection"))


def test_oversized_record_lengths_are_refused_before_buffering() -> None:
    _, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    with pytest.raises(AuthError, match="sealed record of"):
        s.receive((1 << 31).to_bytes(4, "big"))
    _, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    with pytest.raises(AuthError):
        s.receive((3).to_bytes(4, "big"))  # shorter than a tag


def test_a_recorded_session_cannot_be_replayed_into_a_new_one() -> None:
    c, s, wire = handshake(Keyring([KEY]), Keyring([KEY]))
    data = c.seal(b"set leader=me")
    fresh = Session(Keyring([KEY]), initiator=False)
    assert fresh.receive(wire[0]) == b""  # the old ClientHello is answered with a new nonce
    with pytest.raises(AuthError, match="Finish does not verify"):
        fresh.receive(wire[2] + data)
    # and a recorded ServerHello does not fool a new client either
    client = Session(Keyring([KEY]), initiator=True)
    client.start()
    with pytest.raises(AuthError, match="does not verify"):
        client.receive(wire[1])


def test_a_wrong_key_is_refused_with_a_reason_and_no_plaintext() -> None:
    c = Session(Keyring([OTHER]), initiator=True)
    s = Session(Keyring([KEY]), initiator=False)
    with pytest.raises(AuthError, match="does not hold"):
        s.receive(c.start())
    assert int.from_bytes(s.out[6:8], "big") == REFUSED | R_UNKNOWN_KEY
    with pytest.raises(AuthError, match="not in its keyring"):
        c.receive(s.out)
    # same key id, wrong key (a forged hello naming our key id): the Finish fails
    forged = Session(Keyring([OTHER]), initiator=True)
    hello = forged.start()
    forged_hello = hello[:8] + key_id(KEY) + hello[16:]
    s = Session(Keyring([KEY]), initiator=False)
    s.receive(forged_hello)
    with pytest.raises(AuthError):
        s.receive(os.urandom(32))


def test_plaintext_is_refused_at_the_first_byte_both_ways() -> None:
    frame = fastgossip.encode(fastgossip.Gossip("x", "leader", b"me", 1 << 60))
    s = Session(Keyring([KEY]), initiator=False)
    with pytest.raises(AuthError, match="plaintext"):
        s.receive(frame[:1])
    assert int.from_bytes(s.out[6:8], "big") == REFUSED | R_NOT_ENCRYPTED
    c = Session(Keyring([KEY]), initiator=True)
    c.start()
    with pytest.raises(AuthError, match="plaintext"):
        c.receive(frame)
    assert c.out == b""  # a client never answers a refusal


def test_no_downgrade_a_version_or_flag_change_is_refused() -> None:
    c = Session(Keyring([KEY]), initiator=True)
    hello = bytearray(c.start())
    for index, value in ((4, 0), (4, 2), (5, 2), (6, 1), (7, 1)):
        s = Session(Keyring([KEY]), initiator=False)
        bad = bytearray(hello)
        bad[index] = value
        with pytest.raises(AuthError):
            s.receive(bytes(bad))
        assert s.out[:4] == b"FGSK" and not s.established
    # a ServerHello altered anywhere fails the client's check
    _, _, wire = handshake(Keyring([KEY]), Keyring([KEY]))
    for i in range(SERVER_HELLO_SIZE):
        client = Session(Keyring([KEY]), initiator=True)
        client._hello = wire[0]
        client.key = KEY
        bad = bytearray(wire[1])
        bad[i] ^= 0x01
        with pytest.raises(AuthError):
            client.receive(bytes(bad))


def test_a_reflected_hello_is_refused() -> None:
    """Found by an attack: someone on the path connects a node's dial back to
    its own listener; the MACs verify (it holds the key), so the node would
    talk to itself. The node's accepting end knows its own recent nonces."""
    nonces = SentNonces(kept=2)
    ring = Keyring([KEY])
    client = Session(ring, initiator=True, nonces=nonces)
    server = Session(ring, initiator=False, nonces=nonces)
    with pytest.raises(AuthError, match="reflected"):
        server.receive(client.start())
    for _ in range(2):  # a bounded memory: the oldest are forgotten
        Session(ring, initiator=True, nonces=nonces).start()
    c2 = Session(ring, initiator=True)
    assert Session(ring, initiator=False, nonces=nonces).receive(c2.start()) == b""


def test_sealing_before_the_handshake_is_an_error() -> None:
    c = Session(Keyring([KEY]), initiator=True)
    with pytest.raises(AuthError):
        c.seal(b"x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_yield_plaintext_to_a_server(data: bytes) -> None:
    s = Session(Keyring([KEY]), initiator=False)
    try:
        out = s.receive(data)
    except AuthError:
        return
    assert out == b"" and not s.established


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 3))
def test_random_bytes_after_the_handshake_never_open(data: bytes, where: int) -> None:
    _, s, _ = handshake(Keyring([KEY]), Keyring([KEY]))
    try:
        out = s.receive(data)
    except AuthError:
        return
    assert out == b""  # at most an incomplete record


# -- keys and the keyring -------------------------------------------------------
def test_keys_encode_and_decode() -> None:
    k = generate_key()
    assert len(k) == 32 and generate_key() != k
    assert decode_key(encode_key(k)) == k
    assert decode_key(k) == k
    for bad in ("", "not base64!", base64.b64encode(b"short").decode(), b"x" * 31):
        with pytest.raises(ValueError):
            decode_key(bad)
    with pytest.raises(TypeError):
        decode_key(123)  # type: ignore[arg-type]


def test_keyring_rotation_rules() -> None:
    k1, k2 = generate_key(), generate_key()
    ring = Keyring([k1])
    removed: List[bytes] = []
    ring.on_remove(removed.append)
    with pytest.raises(ValueError, match="install"):
        ring.use(k2)
    ring.install(encode_key(k2))
    assert ring.primary == k1 and ring.keys == [k1, k2] and len(ring) == 2
    assert ring.find(key_id(k2)) == k2
    ring.use(k2)
    assert ring.primary == k2 and ring.list() == [encode_key(k2), encode_key(k1)]
    with pytest.raises(ValueError, match="primary"):
        ring.remove(k2)
    ring.remove(k1)
    assert removed == [k1] and ring.keys == [k2] and ring.find(key_id(k1)) is None
    with pytest.raises(ValueError):
        ring.remove(k1)
    assert encode_key(k2) not in repr(ring) and key_id(k2).hex() in repr(ring)


def test_keyring_files_and_environment(tmp_path, monkeypatch) -> None:
    k1, k2 = generate_key(), generate_key()
    path = tmp_path / "keyring"
    Keyring([k1, k2]).save(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ring = Keyring.load(path)
    assert ring.keys == [k1, k2]
    path.write_text("# comment\n\n" + encode_key(k2) + "\n")
    assert Keyring.load(path).keys == [k2]
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no key"):
        Keyring.load(path)
    monkeypatch.delenv("FASTGOSSIP_CLUSTER_KEY", raising=False)
    assert keyring_from_env() is None
    monkeypatch.setenv("FASTGOSSIP_CLUSTER_KEY", f"{encode_key(k1)}, {encode_key(k2)}")
    env_ring = keyring_from_env()
    assert env_ring is not None and env_ring.keys == [k1, k2]


def test_node_config_checks_and_hides_the_key() -> None:
    k = generate_key()
    config = NodeConfig.localhost("a", cluster_key=k)
    assert encode_key(k) not in repr(config) and repr(k) not in repr(config)
    with pytest.raises(ValueError):
        NodeConfig.localhost("a", cluster_key=b"too short")
    with pytest.raises(ValueError, match="choose one"):
        NodeConfig.localhost("a", cluster_key=k, cluster_key_file="/nonexistent")
    with pytest.raises(TypeError):
        NodeConfig.localhost("a", ssl="cert.pem")  # type: ignore[arg-type]
