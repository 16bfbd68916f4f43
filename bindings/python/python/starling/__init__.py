"""Starling for Python: an embeddable P2P gossip overlay with pub/sub and presence.

A thin, idiomatic layer over the generated ``starling._ffi`` module (uniffi), which calls
libstarling::

    import starling

    with starling.Node(bind="127.0.0.1:0") as a, starling.Node(bind="127.0.0.1:0", bootstrap=[a.contact]) as b:
        sub = a.subscribe("chat")
        b.publish("chat", b"hello")          # once the two are connected
        for item in sub:                      # Message, PresenceEvent or Lagged
            print(item.author, item.payload)
            break

Receiving: iterate a :class:`Subscription` (``for``/``async for``), or register callbacks
with :meth:`Node.on_message`, :meth:`Node.on_presence` and :meth:`Node.on_lag`. Callbacks
run on a delivery thread of the library (one per topic), never on the network threads;
an exception in a callback is logged (logger ``starling``) and delivery continues.

Who may connect: ``Node(admission=callable)`` (``callable(peer_id) -> bool``, asked on the
network threads: keep it quick; one that raises refuses the peer), ``allowlist=[ids]``,
and private networks (``authority=``, ``credential=``; see :func:`issue_credential`).

Every failure raises :class:`StarlingError`; its ``kind`` (an :class:`ErrorKind`) is
stable, its text may change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import (
    TYPE_CHECKING,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    List,
    Optional,
    Union,
)

from . import _ffi
from ._ffi import ErrorKind, LogLevel, Message, PresenceChange, PresenceEntry, PresenceEvent
from ._ffi import OfflineReason, Receipt, Stats

__version__ = "0.1.0"

__all__ = [
    "Node",
    "Subscription",
    "Listener",
    "Lagged",
    "Message",
    "PresenceEvent",
    "PresenceEntry",
    "PresenceChange",
    "OfflineReason",
    "Receipt",
    "Stats",
    "StarlingError",
    "ErrorKind",
    "LogLevel",
    "forward_logs",
    "issue_credential",
    "public_key",
    "library_version",
    "topic_id",
]

_log = logging.getLogger("starling")

#: The exception every call raises on failure (``except starling.StarlingError as e:
#: e.kind``). Instances are ``StarlingError.Failed`` with ``kind`` and ``detail``.
StarlingError = _ffi.StarlingError


def _error_text(self: "_ffi.StarlingError.Failed") -> str:
    return self.detail


# The generated text is "kind=..., detail=..."; the kind is an attribute, so str(e) is just
# the human-readable part.
_ffi.StarlingError.Failed.__str__ = _error_text  # type: ignore[method-assign]


def library_version() -> str:
    """The version of the loaded libstarling."""
    return _ffi.version()


def _check_library(expected: str, found: str) -> None:
    """Refuses a libstarling whose version differs from this package's.

    The generated module does not verify uniffi's API checksums, so a stale library could
    otherwise be called with the wrong layout."""
    if expected != found:
        raise ImportError(
            f"starling {expected} loaded libstarling {found}: the native library does not "
            "match this package; reinstall it (pip install ./bindings/python)"
        )


_check_library(__version__, library_version())


def topic_id(name: str) -> str:
    """The 64-hex-digit id of a topic name (BLAKE3 of its UTF-8 bytes)."""
    return _ffi.topic_id(name)


def public_key(seed: bytes) -> str:
    """The public key (peer id, 64 hex digits) of a 32-byte secret ``seed``: the id of a
    node started with ``identity_seed=seed``, or a network authority's public key."""
    return _ffi.public_key(bytes(seed))


def issue_credential(authority_seed: bytes, peer_id: str, network_id: str, expires_unix: int) -> str:
    """As the authority of a private network (secret ``authority_seed``, 32 bytes; keep it
    off the nodes): a credential admitting ``peer_id`` to ``network_id`` until
    ``expires_unix`` (Unix seconds), in text form (``"starling-credential-v1 <hex>"``)."""
    return _ffi.issue_credential(bytes(authority_seed), peer_id, network_id, expires_unix)


class Lagged:
    """A subscription was read too slowly: ``dropped`` older items were lost."""

    __slots__ = ("dropped",)

    def __init__(self, dropped: int) -> None:
        self.dropped = dropped

    def __repr__(self) -> str:
        return f"Lagged(dropped={self.dropped})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lagged) and other.dropped == self.dropped


Item = Union[Message, PresenceEvent, Lagged]

# How long one blocking read waits before Python gets control back (so Ctrl-C and
# unsubscribe from another thread are noticed).
_POLL_MS = 100
_BATCH = 256


def _unwrap(item: "_ffi.SubscriptionItem") -> Item:
    if item.is_message():
        return item.message
    if item.is_presence():
        return item.event
    return Lagged(item.dropped)


def _closed(e: BaseException) -> bool:
    return isinstance(e, StarlingError) and getattr(e, "kind", None) == ErrorKind.CLOSED


def _bytes(data: Union[bytes, bytearray, memoryview, str], what: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or str, not {type(data).__name__}")


class Subscription:
    """The items of one topic, read by iterating (``for item in sub``, ``async for item
    in sub``) or with :meth:`get`. Items are :class:`Message`, :class:`PresenceEvent` or
    :class:`Lagged`. Iteration ends when the subscription is closed or the node shuts
    down. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, inner: "_ffi.Subscription") -> None:
        self._inner = inner
        self._buffer: List[Item] = []
        self._lock = threading.Lock()

    @property
    def topic(self) -> str:
        """The topic name."""
        return self._inner.topic()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._inner.is_unsubscribed()

    def get(self, timeout: Optional[float] = None) -> Optional[Item]:
        """The next item, waiting at most ``timeout`` seconds (``None``: until one
        arrives). Returns ``None`` on timeout; raises :class:`StarlingError` (kind
        ``CLOSED``) once the subscription has ended and everything was read."""
        with self._lock:
            if self._buffer:
                return self._buffer.pop(0)
        if timeout is not None:
            if timeout < 0:
                raise ValueError("timeout must be >= 0")
            got = self._inner.next(int(timeout * 1000))
            return None if got is None else _unwrap(got)
        while True:
            got = self._inner.next(_POLL_MS)
            if got is not None:
                return _unwrap(got)

    def messages(self) -> Iterator[Message]:
        """Iterates over the messages only (presence changes and lag are skipped)."""
        for item in self:
            if isinstance(item, Message):
                yield item

    def __iter__(self) -> Iterator[Item]:
        return self

    def __next__(self) -> Item:
        with self._lock:
            if self._buffer:
                return self._buffer.pop(0)
        while True:
            try:
                batch = self._inner.next_batch(_BATCH, _POLL_MS)
            except StarlingError as e:
                if _closed(e):
                    raise StopIteration from None
                raise
            if batch:
                items = [_unwrap(i) for i in batch]
                with self._lock:
                    self._buffer.extend(items[1:])
                return items[0]

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        with self._lock:
            if self._buffer:
                return self._buffer.pop(0)
        try:
            return _unwrap(await self._inner.recv())
        except StarlingError as e:
            if _closed(e):
                raise StopAsyncIteration from None
            raise

    @property
    def pending(self) -> int:
        """Items waiting to be read."""
        return self._inner.pending() + len(self._buffer)

    def close(self) -> None:
        """Unsubscribes (idempotent): iteration ends after the items already read."""
        self._inner.unsubscribe()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<starling.Subscription topic={self.topic!r}{' closed' if self.closed else ''}>"


class Listener:
    """A callback registration (from :meth:`Node.on_message` and friends). :meth:`cancel`
    stops delivery: once it returns, the callback is not called again (unless cancel is
    called from inside another topic's callback, which does not wait for a call under
    way). Also a context manager."""

    def __init__(self, node: "Node", handle: "_ffi.ListenerHandle") -> None:
        self._node = node
        self._handle = handle

    def cancel(self) -> None:
        """Stops delivery to this callback (idempotent)."""
        self._handle.cancel()
        self._node._listeners.discard(self)

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._handle.is_cancelled()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _guarded(what: str, fn: Callable[..., object], *args: object) -> None:
    # An exception escaping into the library would be reported as an unexpected error
    # on a thread the application does not own: log it here instead.
    try:
        fn(*args)
    except BaseException:  # noqa: BLE001 - a callback must not break delivery
        _log.exception("starling %s callback raised", what)


class _MessageAdapter(_ffi.MessageListener):
    def __init__(self, callback: Callable[[Message], object]) -> None:
        self._callback = callback

    def on_messages(self, messages: List[Message]) -> None:
        callback = self._callback
        for m in messages:
            try:
                callback(m)
            except BaseException:  # noqa: BLE001
                _log.exception("starling message callback raised")


class _PresenceAdapter(_ffi.PresenceListener):
    def __init__(self, callback: Callable[[PresenceEvent], object]) -> None:
        self._callback = callback

    def on_presence(self, event: PresenceEvent) -> None:
        _guarded("presence", self._callback, event)


class _LagAdapter(_ffi.LagListener):
    def __init__(self, callback: Callable[[str, int], object]) -> None:
        self._callback = callback

    def on_lagged(self, topic: str, dropped: int) -> None:
        _guarded("lag", self._callback, topic, dropped)


class _AdmissionAdapter(_ffi.AdmissionPolicy):
    def __init__(self, callback: Callable[[str], object]) -> None:
        self._callback = callback

    def allow(self, peer_id: str) -> bool:
        # Raising into the library would be an unexpected error on a network thread:
        # refuse the peer and log instead.
        try:
            return bool(self._callback(peer_id))
        except BaseException:  # noqa: BLE001 - a policy must not break the node
            _log.exception("starling admission policy raised; refusing peer %s", peer_id)
            return False


class Node:
    """A Starling node. Start it with its configuration; stop it with :meth:`close` or a
    ``with`` block. All arguments are optional:

    - ``bind``: UDP address, e.g. ``"127.0.0.1:0"`` (default ``"0.0.0.0:0"``: all
      interfaces, any port);
    - ``bootstrap``: peers to join, ``"host:port"`` or ``"<peer id>@host:port"``;
    - ``network_id``: nodes of different networks never connect (default ``"starling"``);
    - ``identity_file``: key file for a stable identity (created if missing);
    - ``max_payload``: largest payload in bytes (default 64 KiB);
    - ``presence_ttl``: seconds a presence announcement lives without refresh (default 60);
    - ``worker_threads``: network threads (default 2);
    - ``subscription_queue``: items buffered per subscription (default 1,024);
    - ``advertise``: addresses to advertise instead of the derived ones;
    - ``identity_seed``: 32 secret bytes for a fixed identity without a key file
      (:func:`public_key` gives its id);
    - ``admission``: ``callable(peer_id) -> bool`` deciding which peers may connect
      (inbound, and outbound before and after the handshake). It runs on the node's
      network threads, which handle no traffic meanwhile: keep it quick, do not call the
      node from it. If it raises, the peer is refused (and the exception logged);
    - ``allowlist``: only these peer ids (64 hex digits) may connect (with ``admission``
      too, both must admit);
    - ``authority``, ``credential``: a private network: the authority's public key (64
      hex digits) and this node's credential text; peers without a valid credential from
      the same authority are refused.

    Refusals are counted in ``stats().refused`` by reason. Raises :class:`StarlingError`
    (``INVALID_BIND``, ``INVALID_BOOTSTRAP``, ``INVALID_CONFIG``, ``INVALID_CREDENTIAL``,
    ``TRANSPORT``, ``IDENTITY``…) if it cannot start.
    """

    def __init__(
        self,
        bind: str = "0.0.0.0:0",
        bootstrap: Iterable[str] = (),
        *,
        network_id: str = "starling",
        identity_file: Optional[str] = None,
        max_payload: int = 65536,
        presence_ttl: float = 60.0,
        worker_threads: int = 2,
        subscription_queue: int = 1024,
        advertise: Iterable[str] = (),
        identity_seed: Optional[bytes] = None,
        admission: Optional[Callable[[str], object]] = None,
        allowlist: Optional[Iterable[str]] = None,
        authority: Optional[str] = None,
        credential: Optional[str] = None,
    ) -> None:
        if isinstance(bootstrap, str):
            bootstrap = [bootstrap]
        config = _ffi.Config(
            bind=bind,
            bootstrap=list(bootstrap),
            advertise=list(advertise),
            identity_file=None if identity_file is None else str(identity_file),
            network_id=network_id,
            max_payload=max_payload,
            presence_ttl_ms=int(presence_ttl * 1000),
            worker_threads=worker_threads,
            subscription_queue=subscription_queue,
            identity_seed=None if identity_seed is None else bytes(identity_seed),
            allowlist=None if allowlist is None else list(allowlist),
            authority=authority,
            credential=credential,
        )
        if admission is None:
            self._inner = _ffi.Node(config)
        else:
            if not callable(admission):
                raise TypeError("admission must be a callable(peer_id) -> bool")
            self._inner = _ffi.Node.with_admission(config, _AdmissionAdapter(admission))
        self._listeners: "set[Listener]" = set()

    # Identity and addresses

    @property
    def id(self) -> str:
        """This node's identity (its Ed25519 public key) as 64 hex digits."""
        return self._inner.id()

    @property
    def id_bytes(self) -> bytes:
        """This node's identity as 32 bytes."""
        return self._inner.id_bytes()

    @property
    def contact(self) -> str:
        """``"<peer id>@<address>"``: what other nodes bootstrap from to reach this one."""
        return self._inner.contact()

    @property
    def local_addrs(self) -> List[str]:
        """The advertised addresses (``"ip:port"``)."""
        return self._inner.local_addrs()

    @property
    def bound_addr(self) -> str:
        """The bound UDP address (the real port when 0 was asked for)."""
        return self._inner.bound_addr()

    # Network

    def join(self, *peers: str) -> None:
        """Joins the network through ``peers`` (in the background)."""
        self._inner.join(list(peers))

    def publish(self, topic: str, payload: Union[bytes, bytearray, memoryview, str]) -> Receipt:
        """Publishes ``payload`` (bytes, or str sent as UTF-8) on ``topic``. This node does
        not receive its own messages. Raises ``PAYLOAD_TOO_LARGE`` above ``max_payload``."""
        return self._inner.publish(topic, _bytes(payload, "payload"))

    def subscribe(self, topic: str) -> Subscription:
        """Subscribes to ``topic``; read the result by iterating it."""
        return Subscription(self._inner.subscribe(topic))

    # Presence

    def set_presence(self, topic: str, metadata: Union[bytes, bytearray, memoryview, str] = b"") -> None:
        """Announces this node online on ``topic`` with ``metadata`` (at most 1 KiB)."""
        self._inner.set_presence(topic, _bytes(metadata, "metadata"))

    def clear_presence(self, topic: str) -> None:
        """Announces that this node is no longer online on ``topic``."""
        self._inner.clear_presence(topic)

    def online(self, topic: str) -> List[PresenceEntry]:
        """The other peers online on ``topic`` as this node sees it (this node itself is not listed)."""
        return self._inner.online(topic)

    # Callbacks

    def _keep(self, handle: "_ffi.ListenerHandle") -> Listener:
        listener = Listener(self, handle)
        # The node keeps the registration alive: delivery stops on cancel() or close(),
        # not when the caller drops the returned object.
        self._listeners.add(listener)
        return listener

    def on_message(self, topic: str, callback: Callable[[Message], object]) -> Listener:
        """Calls ``callback(message)`` for each message of ``topic``, on the topic's
        delivery thread, until the returned :class:`Listener` is cancelled."""
        return self._keep(self._inner.add_message_listener(topic, _MessageAdapter(callback)))

    def on_presence(self, topic: str, callback: Callable[[PresenceEvent], object]) -> Listener:
        """Calls ``callback(event)`` for each presence change on ``topic``, starting with an
        Online event for each peer already online there."""
        return self._keep(self._inner.add_presence_listener(topic, _PresenceAdapter(callback)))

    def on_lag(self, topic: str, callback: Callable[[str, int], object]) -> Listener:
        """Calls ``callback(topic, dropped)`` when ``topic``'s callbacks were too slow and
        ``dropped`` items were lost."""
        return self._keep(self._inner.add_lag_listener(topic, _LagAdapter(callback)))

    # State

    def stats(self) -> Stats:
        """A snapshot of the node's counters."""
        return self._inner.stats()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._inner.is_shut_down()

    def close(self) -> None:
        """Shuts down gracefully (at most ~3 s; idempotent). Subscriptions end, callbacks
        stop, and every later call raises ``StarlingError`` of kind ``CLOSED``."""
        for listener in list(self._listeners):
            listener.cancel()
        self._inner.shutdown()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<starling.Node {self.id[:8]}{' closed' if self.closed else ''}>"


class _LogAdapter(_ffi.LogListener):
    def on_log(self, record: "_ffi.LogRecord") -> None:
        level = {
            LogLevel.ERROR: logging.ERROR,
            LogLevel.WARN: logging.WARNING,
            LogLevel.INFO: logging.INFO,
            LogLevel.DEBUG: logging.DEBUG,
            LogLevel.TRACE: logging.DEBUG,
        }.get(record.level, logging.INFO)
        logging.getLogger("starling." + record.target.replace("::", ".")).log(level, record.message)


_log_handle: "Optional[_ffi.ListenerHandle]" = None


def forward_logs(level: LogLevel = LogLevel.INFO, callback: Optional[Callable[["_ffi.LogRecord"], object]] = None) -> Listener:
    """Forwards libstarling's log records at ``level`` and above to Python ``logging``
    (loggers ``starling.<rust module>``), or to ``callback(record)`` if given; replaces an
    earlier forwarding. Returns a handle whose ``cancel()`` stops it."""
    global _log_handle
    if callback is None:
        adapter: _ffi.LogListener = _LogAdapter()
    else:

        class _Callback(_ffi.LogListener):
            def on_log(self, record: "_ffi.LogRecord") -> None:
                _guarded("log", callback, record)

        adapter = _Callback()
    handle = _ffi.set_log_listener(level, adapter)
    _log_handle = handle
    return _LogListener(handle)


class _LogListener(Listener):
    def __init__(self, handle: "_ffi.ListenerHandle") -> None:
        self._handle = handle

    def cancel(self) -> None:
        global _log_handle
        self._handle.cancel()
        if _log_handle is self._handle:
            _log_handle = None


if TYPE_CHECKING:  # pragma: no cover
    _ = asyncio
