"""Encrypted, authenticated connections: the cluster key, its keyring, the
handshake and the sealed records (docs/PROTOCOL.md, "Security").

Sans-IO like the core: a ``Session`` takes the bytes a connection received
and returns the plaintext of the records they completed; ``seal`` turns
plaintext into records; ``out`` holds handshake bytes to write. The transport
puts one ``Session`` between each socket and the frame decoder.

Primitives are the ``cryptography`` package's (AES-256-GCM, HKDF-SHA256) and
the standard library's (HMAC-SHA256, ``os.urandom``); nothing here is a
home-made primitive. The handshake in one picture (C dials, S accepts)::

    C -> S  ClientHello  "FGSK" 01 01 0000 | key_id(8) | nonce_c(32)       48 bytes
    S -> C  ServerHello  "FGSK" 01 01 0000 | key_id(8) | nonce_s(32) | mac_s(32)
    C -> S  Finish       mac_c(32), then C's sealed records at once
            (S answers with a Refusal "FGSK" 01 01 | code(2) instead, and closes)

    transcript = ClientHello | ServerHello[:48]
    k_c2s | k_s2c | k_fin = HKDF-SHA256(ikm=cluster key, salt=nonce_c|nonce_s,
                                        info="fastgossip v1 session" | transcript, 96)
    mac_s = HMAC-SHA256(k_fin, "fastgossip v1 server" | transcript)
    mac_c = HMAC-SHA256(k_fin, "fastgossip v1 client" | transcript)
    record = u32 length of ct | ct,  ct = AES-256-GCM(k_dir, nonce = 96-bit
             big-endian count of records sent in that direction, aad = the length)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, FrozenSet, Iterable, List, Optional, Tuple, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import GossipError

__all__ = [
    "AuthError",
    "KEY_SIZE",
    "Keyring",
    "Session",
    "TLSConfig",
    "decode_key",
    "encode_key",
    "generate_key",
    "key_id",
    "keyring_from_env",
]

MAGIC = b"FGSK"
VERSION = 1
SUITE_AES256GCM_HKDF_SHA256 = 1
KEY_SIZE = 32
NONCE_SIZE = 32
MAC_SIZE = 32
KEY_ID_SIZE = 8
PREFIX = MAGIC + bytes([VERSION, SUITE_AES256GCM_HKDF_SHA256])
HELLO_SIZE = len(PREFIX) + 2 + KEY_ID_SIZE + NONCE_SIZE  # 48
SERVER_HELLO_SIZE = HELLO_SIZE + MAC_SIZE  # 80
FINISH_SIZE = MAC_SIZE
REFUSAL_SIZE = len(PREFIX) + 2  # 8
REFUSED = 0x8000  # flags bit of a Refusal; the low bits are the reason
TAG_SIZE = 16
RECORD_HEADER = 4
MAX_RECORD_PLAINTEXT = 1 << 16  # a record's plaintext; larger writes are split
MAX_RECORD = MAX_RECORD_PLAINTEXT + TAG_SIZE
# per direction and connection: then the connection is closed and redialled
# with fresh keys (TLS 1.3's AES-GCM limit is 2**24.5 records, RFC 8446 5.5)
MAX_RECORDS = 1 << 24

# Refusal reasons (the low 15 bits of a Refusal's flags)
R_NOT_ENCRYPTED = 1  # the peer sent something that is not a ClientHello
R_VERSION = 2  # a version or cipher suite this node does not speak
R_UNKNOWN_KEY = 3  # no key of this node's keyring has the hello's key id
REASONS = {  # what the dialling end is told
    R_NOT_ENCRYPTED: "it received plaintext (it requires a cluster key)",
    R_VERSION: "it speaks another version of the handshake",
    R_UNKNOWN_KEY: "our primary key is not in its keyring",
}

_INFO = b"fastgossip v1 session"
_SERVER_LABEL = b"fastgossip v1 server"
_CLIENT_LABEL = b"fastgossip v1 client"
_KEY_ID_LABEL = b"fastgossip v1 key id"

ENV_VAR = "FASTGOSSIP_CLUSTER_KEY"


class AuthError(GossipError, ValueError):
    """A connection failed the handshake, or a sealed record failed to open
    (wrong key, plaintext peer, tampered, replayed, reordered or truncated
    bytes). The connection is closed; ``stats.auth_failures`` counts them.
    ``own_hello``: the peer sent this node's own ClientHello (it dialled
    itself, or someone reflected its dial)."""

    own_hello = False


# -- keys ----------------------------------------------------------------------
def generate_key() -> bytes:
    """A new cluster key: 32 random bytes from the OS."""
    return os.urandom(KEY_SIZE)


def encode_key(key: bytes) -> str:
    """The base64 text of a key (what ``fastgossip keygen`` prints)."""
    return base64.b64encode(_check_key(key)).decode("ascii")


def decode_key(key: Union[bytes, bytearray, str]) -> bytes:
    """A key from its 32 raw bytes or its base64 text; ValueError otherwise."""
    if isinstance(key, str):
        text = key.strip()
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ValueError("a cluster key in text is base64 (see 'fastgossip keygen')") from None
        if len(raw) != KEY_SIZE:
            raise ValueError(
                f"a cluster key is {KEY_SIZE} bytes; this base64 text holds {len(raw)}"
            )
        return raw
    if isinstance(key, (bytes, bytearray)):
        return _check_key(bytes(key))
    raise TypeError(f"a cluster key is bytes or base64 str, not {type(key).__name__}")


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise ValueError(f"a cluster key is {KEY_SIZE} bytes (fastgossip.generate_key())")
    return bytes(key)


def key_id(key: bytes) -> bytes:
    """The 8 bytes a ClientHello names its key by: HMAC-SHA256(key, label)[:8].
    It says which key of a keyring is in use, not the key."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_SIZE]


class Keyring:
    """The cluster keys a node accepts, and the primary one it dials with.

    Rotation is serf's: ``install`` a new key on every node (accepted, not yet
    used), ``use`` it on every node (new connections dial with it), then
    ``remove`` the old one everywhere (connections that were opened with it
    are closed, and reopen with the primary). The primary cannot be removed.

    A keyring may be kept in a file (``load``/``save``: one base64 key per line,
    the primary first) that a node given ``cluster_key_file`` re-reads when it
    changes (the file is then the whole truth: keys installed through the API
    only are dropped at the next change); ``fastgossip keyring`` edits such
    files atomically. The methods may be called from any thread.
    """

    def __init__(
        self, keys: Iterable[Union[bytes, str]], primary: Optional[Union[bytes, str]] = None
    ):
        decoded: List[bytes] = []
        for k in keys:
            raw = decode_key(k)
            if raw not in decoded:
                decoded.append(raw)
        if not decoded:
            raise ValueError("a keyring holds at least one key")
        self._lock = threading.Lock()
        self._keys = decoded
        self._primary = decoded[0] if primary is None else decode_key(primary)
        if self._primary not in decoded:
            raise ValueError("the primary key must be one of the keyring's keys")
        self._removed: List[Callable[[bytes], None]] = []

    # -- reading ---------------------------------------------------------------
    @property
    def primary(self) -> bytes:
        """The key new connections are dialled with."""
        return self._primary

    @property
    def keys(self) -> List[bytes]:
        """Every key accepted, the primary first."""
        return [self._primary] + [k for k in self._keys if k != self._primary]

    def list(self) -> List[str]:
        """Every key accepted, base64, the primary first."""
        return [encode_key(k) for k in self.keys]

    def find(self, kid: bytes) -> Optional[bytes]:
        """The key whose ``key_id`` is ``kid``, if this keyring holds it."""
        kid = bytes(kid)  # (one HMAC per key: a keyring holds a few)
        return next((k for k in self._keys if key_id(k) == kid), None)

    def __contains__(self, key: object) -> bool:
        try:
            return decode_key(key) in self._keys  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never the keys themselves
        ids = ", ".join(key_id(k).hex() for k in self.keys)
        return f"Keyring(key ids: {ids}; primary first)"

    # -- changing --------------------------------------------------------------
    def install(self, key: Union[bytes, str]) -> None:
        """Accept ``key`` too (connections still dial with the primary)."""
        raw = decode_key(key)
        with self._lock:
            if raw not in self._keys:
                self._keys = self._keys + [raw]

    def use(self, key: Union[bytes, str]) -> None:
        """Dial new connections with ``key``, which must be installed."""
        raw = decode_key(key)
        with self._lock:
            if raw not in self._keys:
                raise ValueError("install a key on every node before using it")
            self._primary = raw

    def remove(self, key: Union[bytes, str]) -> None:
        """Stop accepting ``key``; connections opened with it are closed."""
        raw = decode_key(key)
        with self._lock:
            if raw == self._primary:
                raise ValueError("the primary key cannot be removed: use() another first")
            if raw not in self._keys:
                raise ValueError("that key is not in the keyring")
            self._keys = [k for k in self._keys if k != raw]
            listeners = list(self._removed)
        for fn in listeners:
            fn(raw)

    def replace(self, other: Keyring) -> None:
        """Take ``other``'s keys and primary (a re-read keyring file); keys it
        lacks are removed as by ``remove``."""
        with self._lock:
            gone = [k for k in self._keys if k not in other._keys]
            self._keys = list(other._keys)
            self._primary = other._primary
            listeners = list(self._removed)
        for raw in gone:
            for fn in listeners:
                fn(raw)

    def on_remove(self, fn: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``fn(key)`` when a key is removed (in the thread that removed
        it); returns the undo."""
        with self._lock:
            self._removed = self._removed + [fn]

        def undo() -> None:
            with self._lock:
                self._removed = [f for f in self._removed if f is not fn]

        return undo

    # -- files -----------------------------------------------------------------
    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> Keyring:
        """A keyring file: one base64 key per line, the primary first; blank
        lines and lines starting with '#' are skipped."""
        with open(path, encoding="ascii") as f:
            lines = [ln.strip() for ln in f]
        keys = [ln for ln in lines if ln and not ln.startswith("#")]
        if not keys:
            raise ValueError(f"{os.fspath(path)}: no key in the keyring file")
        try:
            return cls(keys)
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}: {exc}") from None

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the keyring to ``path`` atomically (mode 0600)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write("# fastgossip keyring: the primary key first\n")
                for k in self.list():
                    f.write(k + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def keyring_from_env(name: str = ENV_VAR) -> Optional[Keyring]:
    """A keyring from the environment variable ``name``: base64 keys separated
    by commas, the primary first; None when it is unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    return Keyring([k for k in (p.strip() for p in text.split(",")) if k])


def as_keyring(value: Union[Keyring, bytes, str, Iterable[Union[bytes, str]]]) -> Keyring:
    """``NodeConfig.cluster_key``: a Keyring, one key, or keys (primary first)."""
    if isinstance(value, Keyring):
        return value
    if isinstance(value, (bytes, bytearray, str)):
        return Keyring([value])
    return Keyring(list(value))


# -- the handshake and records -------------------------------------------------
def derive(key: bytes, transcript: bytes) -> Tuple[bytes, bytes, bytes]:
    """(k_c2s, k_s2c, k_fin) of a session whose hellos are ``transcript``."""
    nonce_c = transcript[16:HELLO_SIZE]
    nonce_s = transcript[HELLO_SIZE + 16 : 2 * HELLO_SIZE]
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=3 * KEY_SIZE,
        salt=nonce_c + nonce_s,
        info=_INFO + transcript,
    ).derive(key)
    return okm[:KEY_SIZE], okm[KEY_SIZE : 2 * KEY_SIZE], okm[2 * KEY_SIZE :]


def finish_mac(k_fin: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.new(k_fin, label + transcript, hashlib.sha256).digest()


def hello(kid: bytes, nonce: bytes) -> bytes:
    return PREFIX + b"\x00\x00" + kid + nonce


def refusal(reason: int) -> bytes:
    return PREFIX + (REFUSED | reason).to_bytes(2, "big")


def looks_encrypted(data: bytes) -> bool:
    """Whether ``data`` (the first bytes of a connection) starts a handshake."""
    return bytes(data[:4]) == MAGIC


# session states
_HELLO, _SERVER_HELLO, _FINISH, _OPEN, _FAILED = range(5)


class SentNonces:
    """The nonces of one node's latest ClientHellos: its accepting end, sent
    one of them, is talking to itself (a dial reflected back by someone on
    the path), which the MACs alone would not show."""

    __slots__ = ("_seen", "_kept")

    def __init__(self, kept: int = 4096) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._kept = kept

    def add(self, nonce: bytes) -> None:
        self._seen[nonce] = None
        if len(self._seen) > self._kept:
            self._seen.popitem(last=False)

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._seen


class Session:
    """One connection's handshake, then its sealed records (see the module
    docstring). ``initiator``: this end dialled. ``out`` holds bytes to
    write after ``start`` and ``receive``; ``AuthError`` ends the session (a
    Refusal for the peer may be left in ``out``)."""

    __slots__ = (
        "keyring",
        "initiator",
        "state",
        "out",
        "key",
        "_rand",
        "_buf",
        "_hello",
        "_transcript",
        "_fin",
        "_seal",
        "_open",
        "_sent",
        "_recv",
        "_nonces",
    )

    def __init__(
        self,
        keyring: Keyring,
        initiator: bool,
        rand: Callable[[int], bytes] = os.urandom,
        nonces: Optional[SentNonces] = None,
    ) -> None:
        self.keyring = keyring
        self._nonces = nonces  # this node's (see SentNonces)
        self.initiator = initiator
        self.state = _SERVER_HELLO if initiator else _HELLO
        self.out = b""
        self.key: Optional[bytes] = None  # the cluster key this session is under
        self._rand = rand
        self._buf = bytearray()
        self._hello = b""
        self._transcript = b""
        self._fin = b""
        self._seal: Optional[AESGCM] = None
        self._open: Optional[AESGCM] = None
        self._sent = 0
        self._recv = 0

    @property
    def established(self) -> bool:
        return self.state == _OPEN

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete handshake message or record."""
        return len(self._buf)

    def start(self) -> bytes:
        """The initiator's ClientHello (what to write first)."""
        assert self.initiator and not self._hello
        key = self.keyring.primary
        self.key = key
        nonce = self._rand(NONCE_SIZE)
        if self._nonces is not None:
            self._nonces.add(nonce)
        self._hello = hello(key_id(key), nonce)
        return self._hello

    def _fail(self, message: str, reason: int = 0) -> AuthError:
        self.state = _FAILED
        self._buf = bytearray()
        self.out = refusal(reason) if reason and not self.initiator else b""
        return AuthError(message)

    def _check_prefix(self, buf: bytearray) -> None:
        """Refuse at the first byte that cannot start a handshake message."""
        head = bytes(buf[: len(PREFIX)])
        if not MAGIC.startswith(head[:4]):
            if self.initiator:
                raise self._fail("the peer answered in plaintext: it has no cluster key")
            raise self._fail("the peer sent plaintext: it has no cluster key", R_NOT_ENCRYPTED)
        if len(head) >= 6 and head != PREFIX:
            raise self._fail(
                f"the peer speaks handshake version {head[4]} suite {head[5]}; "
                f"this node speaks {VERSION} suite {SUITE_AES256GCM_HKDF_SHA256}",
                R_VERSION,
            )

    def receive(self, data: bytes) -> bytes:
        """Bytes received; returns the plaintext of the records they completed
        (b"" while the handshake runs). Raises AuthError."""
        if self.state == _OPEN:
            return self._open_records(data)
        if self.state == _FAILED:
            raise AuthError("the session already failed")
        self.out = b""
        buf = self._buf
        buf += data
        if self.state == _HELLO:  # accepting end, waiting for the ClientHello
            self._check_prefix(buf)
            if len(buf) < HELLO_SIZE:
                return b""
            client_hello = bytes(buf[:HELLO_SIZE])
            del buf[:HELLO_SIZE]
            if client_hello[6:8] != b"\x00\x00":
                raise self._fail("a ClientHello with unknown flags", R_VERSION)
            if self._nonces is not None and client_hello[16:] in self._nonces:
                exc = self._fail(
                    "our own ClientHello came back: this node dialled itself (an address of "
                    "its own among the seeds?) or the dial was reflected"
                )
                exc.own_hello = True
                raise exc
            kid = client_hello[8:16]
            key = self.keyring.find(kid)
            if key is None:
                raise self._fail(
                    f"the peer dials with key id {kid.hex()}, which this node's keyring "
                    "does not hold",
                    R_UNKNOWN_KEY,
                )
            self.key = key
            server_hello = hello(kid, self._rand(NONCE_SIZE))
            transcript = client_hello + server_hello
            k_c2s, k_s2c, k_fin = derive(key, transcript)
            self._transcript, self._fin = transcript, k_fin
            self._open, self._seal = AESGCM(k_c2s), AESGCM(k_s2c)
            self.out = server_hello + finish_mac(k_fin, _SERVER_LABEL, transcript)
            self.state = _FINISH
        if self.state == _FINISH:  # accepting end, waiting for the client's Finish
            if len(buf) < FINISH_SIZE:
                return b""
            mac = bytes(buf[:FINISH_SIZE])
            del buf[:FINISH_SIZE]
            expected = finish_mac(self._fin, _CLIENT_LABEL, self._transcript)
            if not hmac.compare_digest(mac, expected):
                raise self._fail("the peer's Finish does not verify: a wrong key or a replay")
            return self._established()
        # dialling end, waiting for the ServerHello (or a Refusal)
        self._check_prefix(buf)
        if len(buf) >= REFUSAL_SIZE:
            flags = int.from_bytes(buf[6:8], "big")
            if flags & REFUSED:
                why = REASONS.get(flags & ~REFUSED, f"reason {flags & ~REFUSED}")
                # the Refusal is not authenticated: it only ever ends a connection
                raise self._fail(f"the peer refused the handshake: {why}")
            if flags:
                raise self._fail("a ServerHello with unknown flags")
        if len(buf) < SERVER_HELLO_SIZE:
            return b""
        server_hello = bytes(buf[:HELLO_SIZE])
        mac = bytes(buf[HELLO_SIZE:SERVER_HELLO_SIZE])
        del buf[:SERVER_HELLO_SIZE]
        if server_hello[8:16] != self._hello[8:16]:
            raise self._fail("the peer answered under another key id")
        transcript = self._hello + server_hello
        assert self.key is not None
        k_c2s, k_s2c, k_fin = derive(self.key, transcript)
        if not hmac.compare_digest(mac, finish_mac(k_fin, _SERVER_LABEL, transcript)):
            raise self._fail("the peer's ServerHello does not verify: a wrong key or a replay")
        self._seal, self._open = AESGCM(k_c2s), AESGCM(k_s2c)
        self.out = finish_mac(k_fin, _CLIENT_LABEL, transcript)
        return self._established()

    def _established(self) -> bytes:
        self.state = _OPEN
        self._transcript = self._fin = b""
        rest, self._buf = bytes(self._buf), bytearray()
        return self._open_records(rest) if rest else b""

    def _open_records(self, data: bytes) -> bytes:
        buf = self._buf
        if buf:
            buf += data
            view = memoryview(buf)
        else:
            view = memoryview(data)
        end = len(view)
        aead = self._open
        assert aead is not None
        try:
            # where the complete records are, then each opened into one buffer
            # (one allocation: no per-record bytes, no join)
            spans = []
            pos = total = 0
            while end - pos >= RECORD_HEADER:
                n = int.from_bytes(view[pos : pos + RECORD_HEADER], "big")
                if n < TAG_SIZE or n > MAX_RECORD:
                    raise self._fail(f"a sealed record of {n} bytes (at most {MAX_RECORD})")
                if pos + RECORD_HEADER + n > end:
                    break
                spans.append((pos, n))
                total += n - TAG_SIZE
                pos += RECORD_HEADER + n
            if self._recv + len(spans) > MAX_RECORDS:
                raise self._fail("too many records on one connection")
            plain = bytearray(total)
            out = memoryview(plain)
            at = 0
            try:
                for start, n in spans:
                    body = start + RECORD_HEADER
                    try:
                        aead.decrypt_into(
                            self._recv.to_bytes(12, "big"),
                            view[body : body + n],
                            view[start:body],
                            out[at : at + n - TAG_SIZE],
                        )
                    except InvalidTag:
                        raise self._fail(
                            "a sealed record failed authentication (tampered, replayed, "
                            "reordered or dropped bytes)"
                        ) from None
                    self._recv += 1
                    at += n - TAG_SIZE
            finally:
                out.release()
            rest = bytes(view[pos:]) if pos < end else b""
        finally:
            view.release()
        if self.state == _OPEN:
            self._buf = bytearray(rest)
        return plain  # type: ignore[return-value]  # (a bytearray: the decoder takes it)

    def seal(self, data: bytes) -> bytes:
        """``data`` as records (split every MAX_RECORD_PLAINTEXT bytes), in one
        buffer: each record's ciphertext is written in place."""
        aead = self._seal
        if aead is None or self.state != _OPEN:
            raise AuthError("the session is not established")
        size = len(data)
        count = max(1, -(-size // MAX_RECORD_PLAINTEXT))
        if self._sent + count > MAX_RECORDS:
            raise AuthError("too many records on one connection: it must be redialled")
        sealed = bytearray(size + count * (RECORD_HEADER + TAG_SIZE))
        out = memoryview(sealed)
        src = memoryview(data)
        try:
            pos = 0
            for i in range(count):
                chunk = src[i * MAX_RECORD_PLAINTEXT : (i + 1) * MAX_RECORD_PLAINTEXT]
                n = len(chunk) + TAG_SIZE
                header = n.to_bytes(RECORD_HEADER, "big")
                out[pos : pos + RECORD_HEADER] = header
                aead.encrypt_into(
                    self._sent.to_bytes(12, "big"),
                    chunk,
                    header,
                    out[pos + RECORD_HEADER : pos + RECORD_HEADER + n],
                )
                self._sent += 1
                pos += RECORD_HEADER + n
        finally:
            out.release()
            src.release()
        return sealed  # type: ignore[return-value]  # (a bytearray, written as is)


# -- mutual TLS ------------------------------------------------------------------
NODE_URI_PREFIX = "fastgossip:node:"


@dataclass(frozen=True)
class TLSConfig:
    """Mutual TLS for those who run a PKI (``NodeConfig(ssl=TLSConfig(...))``).

    Every node holds a certificate and key signed by ``cafile``'s CA and
    requires the same of its peers, both ways, TLS 1.3. A certificate names the
    node ids it may speak as in its subjectAltName: a DNS name equal to the
    node id, or a URI ``fastgossip:node:<node id>`` for ids that are not host
    names. A peer whose greeting (or any message's sender) names another id is
    refused (``stats.auth_failures``). Host names are not checked: nodes are
    dialled by address and identified by id.
    """

    certfile: str
    keyfile: str
    cafile: str

    def contexts(self) -> Tuple[ssl.SSLContext, ssl.SSLContext]:
        """(server context, client context), each requiring the peer's certificate."""
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False  # nodes are checked by id (tls_identities)
        for ctx in (server, client):
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_cert_chain(self.certfile, self.keyfile)
            ctx.load_verify_locations(cafile=self.cafile)
        return server, client


def tls_identities(peercert: Any) -> FrozenSet[str]:
    """The node ids a verified peer certificate lets its holder speak as."""
    names = set()
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind == "DNS":
            names.add(value)
        elif kind == "URI" and value.startswith(NODE_URI_PREFIX):
            names.add(value[len(NODE_URI_PREFIX) :])
    return frozenset(names)
