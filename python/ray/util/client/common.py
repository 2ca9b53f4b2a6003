"""What both ends of a Ray Client connection share: the framing, the token
handshake, the message layout, and the client-side stand-in for an ObjectRef.

Wire format. Every message is one or more chunks; a chunk is a 5-byte header
(payload length as a big-endian u32, then a flags byte whose bit 0 says "more
chunks of this message follow") and the payload. A chunk carries at most
MAX_CHUNK_BYTES, and a message at most the limit its reader sets: a few KiB
during the handshake, RAY_CLIENT_MAX_MESSAGE_BYTES (2 GiB) afterwards.

Handshake (JSON messages; nothing is unpickled before both sides are proven):
  server -> client  {"server": "ray-client", "protocol", "auth", "nonce"}
  client -> server  {"protocol", "nonce", "proof", "python_version", "ray_version", "namespace", ...}
  server -> client  {"ok": true, "proof", "python_version", "ray_version", ...} or {"ok": false, "error"}
  client -> server  {"runtime_env", "log_to_driver"}   (only after the server's proof checked out)
Proofs are HMAC-SHA256 over both nonces keyed with the cluster token, one per
direction, so the token itself never crosses the wire, the server checks the
client's proof in constant time, and the client knows it reached a server of
its own cluster before it trusts what that server sends.

After the handshake: requests are `!QB` (request id, length of the op name),
the op name, and a pickled body; replies are `!QB` (request id, kind) and a
pickled body. Request id 0 needs no reply (releases, goodbye)."""

import hashlib
import hmac
import json
import os
import socket
import struct
import threading

PROTOCOL_VERSION = 1
DEFAULT_PORT = 10001

_CHUNK_HEADER = struct.Struct("!IB")
_FLAG_MORE = 1
MAX_CHUNK_BYTES = 16 * 1024 * 1024
HANDSHAKE_MAX_BYTES = 8 * 1024
SETTINGS_MAX_BYTES = 256 * 1024
HANDSHAKE_TIMEOUT_S = 10.0


def max_message_bytes():
    """The largest message either side accepts after the handshake."""
    raw = os.environ.get("RAY_CLIENT_MAX_MESSAGE_BYTES", "").strip()
    if raw:
        try:
            value = int(raw)
            if value > 0:
                return value
        except ValueError:
            pass
    return 2 * 1024 * 1024 * 1024


REQUEST_HEADER = struct.Struct("!QB")
REPLY_HEADER = struct.Struct("!QB")
# Reply kinds.
OK = 0
ERROR = 1
LOG = 2
READY = 3


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow."""


class ConnectionClosed(Exception):
    """The peer closed the connection."""


def _recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionClosed("the peer closed the connection")
        got += k
    return buf


def recv_message(sock, limit):
    """One whole message (bytes-like). Raises ProtocolError when a chunk or the
    message is larger than allowed, ConnectionClosed at end of stream."""
    parts = []
    total = 0
    while True:
        length, flags = _CHUNK_HEADER.unpack(_recv_exact(sock, _CHUNK_HEADER.size))
        if flags & ~_FLAG_MORE:
            raise ProtocolError("not a Ray Client message (unknown chunk flags {:#x})".format(flags))
        if length > MAX_CHUNK_BYTES or total + length > limit:
            raise ProtocolError("message larger than the limit of {} bytes".format(limit))
        parts.append(_recv_exact(sock, length) if length else b"")
        total += length
        if not flags & _FLAG_MORE:
            break
    if len(parts) == 1:
        return parts[0]
    return bytearray().join(parts)


def send_message(sock, parts, lock=None):
    """Sends one message made of the bytes-like `parts`, in chunks."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    chunks = []
    for v in views:
        for start in range(0, len(v), MAX_CHUNK_BYTES):
            chunks.append(v[start : start + MAX_CHUNK_BYTES])
    if not chunks:
        chunks = [b""]
    if lock is None:
        lock = _NO_LOCK
    with lock:
        last = len(chunks) - 1
        for i, c in enumerate(chunks):
            sock.sendall(_CHUNK_HEADER.pack(len(c), 0 if i == last else _FLAG_MORE))
            if len(c):
                sock.sendall(c)


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_LOCK = _NoLock()


def send_json(sock, obj):
    send_message(sock, [json.dumps(obj).encode()])


def recv_json(sock, limit=None):
    raw = recv_message(sock, limit or HANDSHAKE_MAX_BYTES)
    try:
        obj = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError("the handshake message is not JSON ({})".format(e)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("the handshake message is not a JSON object")
    return obj


def new_nonce():
    return os.urandom(32).hex()


def proof(token, role, server_nonce, client_nonce):
    """HMAC-SHA256 of both nonces for `role` ("client" or "server"), keyed with the token."""
    msg = "ray-client|{}|{}|{}".format(role, server_nonce, client_nonce).encode()
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def proof_matches(token, role, server_nonce, client_nonce, presented):
    if not isinstance(presented, str):
        return False
    expected = proof(token, role, server_nonce, client_nonce)
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))


def valid_nonce(value):
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


# ----------------------------------------------------------------- the token

WHERE_TOKENS_COME_FROM = (
    "clients read the cluster token from RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, "
    "or ~/.ray/auth_token (see `ray get-auth-token`)"
)


class TokenError(Exception):
    """The token could not be found or read."""


def auth_disabled():
    """True with RAY_AUTH_MODE=disabled; raises TokenError for an unknown mode."""
    raw = os.environ.get("RAY_AUTH_MODE")
    if raw is None:
        return False
    mode = raw.strip().lower()
    if mode in ("", "token"):
        return False
    if mode == "disabled":
        return True
    raise TokenError("RAY_AUTH_MODE={!r} is not a valid mode; accepted values: token, disabled".format(raw))


def _checked(raw, source, path=None):
    t = raw.strip()
    if not t:
        where = " ({})".format(path) if path else ""
        raise TokenError("the cluster token from {} is empty{}".format(source, where))
    if not all(33 <= ord(c) <= 126 for c in t):
        raise TokenError("the cluster token from {} contains characters other than printable ASCII".format(source))
    return t


def _read_file(path, source):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return _checked(f.read(), source, path)
    except FileNotFoundError:
        if source == "RAY_AUTH_TOKEN_PATH":
            raise TokenError("RAY_AUTH_TOKEN_PATH is set to {!r}, but that file does not exist".format(path)) from None
        raise
    except OSError as e:
        raise TokenError("cannot read the token file {!r} (from {}): {}".format(path, source, e.strerror)) from None


def find_token():
    """The cluster token, found as every Ray process finds it: RAY_AUTH_TOKEN,
    the file named by RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token. None when
    authentication is disabled; TokenError when it cannot be found."""
    if auth_disabled():
        return None
    if "RAY_AUTH_TOKEN" in os.environ:
        return _checked(os.environ["RAY_AUTH_TOKEN"], "RAY_AUTH_TOKEN")
    if "RAY_AUTH_TOKEN_PATH" in os.environ:
        return _read_file(os.environ["RAY_AUTH_TOKEN_PATH"], "RAY_AUTH_TOKEN_PATH")
    home = os.environ.get("HOME")
    if not home:
        raise TokenError("HOME is not set, so the default token file ~/.ray/auth_token cannot be located")
    path = os.path.join(home, ".ray", "auth_token")
    try:
        return _read_file(path, "~/.ray/auth_token")
    except FileNotFoundError:
        raise TokenError(
            "no cluster token found: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the cluster's token to "
            "~/.ray/auth_token (`ray get-auth-token` prints it on the head node), or set RAY_AUTH_MODE=disabled "
            "if the cluster runs without authentication"
        ) from None


# ------------------------------------------------------------------- TLS


def _tls_on():
    raw = os.environ.get("RAY_USE_TLS", "").strip().lower()
    if raw in ("", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise ValueError("RAY_USE_TLS={!r} is not valid; accepted values: 1, true, 0, false".format(raw))


def tls_context(server_side):
    """An ssl.SSLContext from Ray's TLS variables (mutual TLS, as the rest of
    the cluster uses), or None when RAY_USE_TLS is off."""
    if not _tls_on():
        return None
    import ssl

    paths = {}
    for var in ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT"):
        value = os.environ.get(var, "").strip()
        if not value:
            raise ValueError("RAY_USE_TLS is on but {} is not set".format(var))
        paths[var] = value
    purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=paths["RAY_TLS_CA_CERT"])
    ctx.load_cert_chain(paths["RAY_TLS_SERVER_CERT"], paths["RAY_TLS_SERVER_KEY"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server_side:
        # Cluster certificates name nodes by address, which a client may reach
        # under another name; the CA (and the token proof) vouch for the server.
        ctx.check_hostname = False
    return ctx


# ------------------------------------------------------------ object refs


class ClientObjectRef:
    """A reference to an object that the Ray Client server holds for this
    client. It is what `ray.put` and `.remote()` return in client mode; when the
    last copy goes away, the server lets go of the object."""

    __slots__ = ("_id", "_worker", "__weakref__")

    def __init__(self, binary, worker):
        self._id = bytes(binary)
        self._worker = worker

    def binary(self):
        return self._id

    def hex(self):
        return self._id.hex()

    def task_id(self):
        # An object id is its task's id followed by a 4-byte index.
        return self._id[:-4].hex()

    def __repr__(self):
        return "ClientObjectRef({})".format(self._id.hex())

    def __eq__(self, other):
        return isinstance(other, ClientObjectRef) and other._id == self._id

    def __hash__(self):
        return hash(self._id)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        raise TypeError(
            "A ClientObjectRef can only travel inside Ray calls (task and actor arguments, ray.put); "
            "it cannot be pickled on its own."
        )

    def __del__(self):
        w = self._worker
        if w is not None:
            try:
                w._release(self._id)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass

    def future(self):
        """A concurrent.futures.Future of the value."""
        import concurrent.futures

        fut = concurrent.futures.Future()

        def run():
            try:
                fut.set_result(self._worker.get([self], None)[0])
            except BaseException as e:  # noqa: BLE001 - handed to the future
                fut.set_exception(e)

        threading.Thread(target=run, name="ray-client-future", daemon=True).start()
        return fut

    def as_future(self):
        """An asyncio future of the value."""
        import asyncio

        return asyncio.wrap_future(self.future())

    def __await__(self):
        return self.as_future().__await__()


def split_address(address):
    """("host", port) of "ray://host[:port]" (IPv6 hosts in brackets)."""
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    rest = rest.strip().rstrip("/")
    if not rest:
        raise ValueError("ray.init: the Ray Client address {!r} names no host; expected ray://HOST:PORT".format(address))
    if rest.startswith("["):
        host, sep, tail = rest[1:].partition("]")
        if not sep:
            raise ValueError("ray.init: bad address {!r}: unclosed '['".format(address))
        port = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    else:
        host, port = rest, ""
    if not port:
        return host, DEFAULT_PORT
    try:
        value = int(port)
        if not 0 < value < 65536:
            raise ValueError
    except ValueError:
        raise ValueError("ray.init: bad port {!r} in the Ray Client address {!r}".format(port, address)) from None
    return host, value


def set_keepalive(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


# ------------------------------------------------------------ message bodies

_BODY_COUNT = struct.Struct("!I")
_MAX_BUFFERS = 1 << 20


def encode_body(make_pickler, value):
    """Pickles `value` (protocol 5, large buffers out of band, so numpy arrays
    are sent without a copy) into a list of parts: the layout (buffer count and
    lengths), the pickle, then each buffer."""
    import io

    buffers = []
    f = io.BytesIO()
    make_pickler(f, buffers.append).dump(value)
    data = f.getbuffer()
    raws = []
    for b in buffers:
        try:
            raws.append(b.raw())
        except BufferError:
            # Not contiguous: send a contiguous copy.
            raws.append(memoryview(bytes(b)))
    layout = struct.pack("!I{}Q".format(len(raws) + 1), len(raws), data.nbytes, *[r.nbytes for r in raws])
    return [layout, data] + raws


def check_size(parts, what):
    """Raises ValueError when a message of `parts` is over the limit the other
    side accepts (it would close the connection)."""
    size = sum(memoryview(p).nbytes for p in parts)
    limit = max_message_bytes()
    if size > limit:
        raise ValueError(
            "{} is {} bytes, more than Ray Client carries in one message ({} bytes; RAY_CLIENT_MAX_MESSAGE_BYTES "
            "on both sides sets it). Create large objects on the cluster (in a task) instead.".format(what, size, limit)
        )


def decode_body(body, make_unpickler):
    """The value of an encoded body; `make_unpickler(file, buffers)` builds the
    unpickler. Raises ProtocolError when the layout does not add up."""
    import io

    body = memoryview(body).cast("B")
    if body.nbytes < _BODY_COUNT.size:
        raise ProtocolError("message body too short")
    (n,) = _BODY_COUNT.unpack_from(body, 0)
    head = _BODY_COUNT.size + 8 * (n + 1)
    if n > _MAX_BUFFERS or body.nbytes < head:
        raise ProtocolError("malformed message body")
    lengths = struct.unpack_from("!{}Q".format(n + 1), body, _BODY_COUNT.size)
    if head + sum(lengths) != body.nbytes:
        raise ProtocolError("message body lengths do not add up")
    off = head
    data = body[off : off + lengths[0]]
    off += lengths[0]
    buffers = []
    for length in lengths[1:]:
        buffers.append(body[off : off + length])
        off += length
    return make_unpickler(io.BytesIO(data), buffers).load()


class ClientObjectRefGenerator:
    """A streaming generator task's refs in Ray Client mode: `next()` asks the
    server for the next ref (waiting for the task to yield it); iteration
    stops after the last. `async for` works too."""

    __slots__ = ("_id", "_worker", "__weakref__")

    def __init__(self, generator_id, worker):
        self._id = bytes(generator_id)
        self._worker = worker

    def __iter__(self):
        return self

    def __next__(self):
        return self._worker.request("generator_next", (self._id,))

    def __aiter__(self):
        return self

    async def __anext__(self):
        import asyncio

        def step():
            try:
                return True, next(self)
            except StopIteration:
                return False, None

        more, ref = await asyncio.get_running_loop().run_in_executor(None, step)
        if not more:
            raise StopAsyncIteration
        return ref

    def __repr__(self):
        return "<ray.ObjectRefGenerator (Ray Client) at {:#x}>".format(id(self))

    def __reduce__(self):
        raise TypeError("An ObjectRefGenerator cannot be passed to other tasks or pickled; pass the ObjectRefs it yields.")

    def __del__(self):
        w = self._worker
        if w is not None:
            try:
                w._release(self._id)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
