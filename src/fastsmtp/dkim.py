"""DKIM signing (RFC 6376) for outgoing messages, with dkimpy (the ``fastsmtp[dkim]`` extra).

``SMTPConnection(..., dkim=DKIMSigner(DKIMKey("example.com", "s1", pem)))`` (or the same
option on a pool) signs every message just before its transaction is built, so the
declared ``SIZE`` and the bytes on the wire are the signed ones. nodemailer's ``dkim``
option: ``domainName``, ``keySelector``, ``privateKey``, ``headerFieldNames`` and
``keys`` map to :class:`DKIMKey` and :class:`DKIMSigner`'s arguments (a mapping in
either spelling is accepted, :meth:`DKIMSigner.coerce`).

What is signed: messages in memory (bytes-like, ``str``, :class:`email.message.Message`)
and file objects. A file is read whole into memory (DKIM hashes the body before the
header that carries the hash can be written), at most ``max_size`` bytes; a larger one is
refused with :class:`~fastsmtp.errors.SMTPInvalidMessage` before anything is written.
One-shot chunk streams (sync or async iterables of bytes) are **refused** with the same
error: reading an async stream whole cannot happen in the sans-IO transaction, and
buffering a generator would silently turn a streaming API into an unbounded one. Join the
chunks yourself, or pass a file.

dkimpy is imported when the first signer is made, never when fastsmtp is imported.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SMTPInvalidMessage
from .message import MessageSource, Payload

__all__ = [
    "CANONICALIZATIONS",
    "DEFAULT_MAX_SIZE",
    "DKIMKey",
    "DKIMSigner",
]

#: The canonicalisation algorithms of RFC 6376 section 3.4.
CANONICALIZATIONS = frozenset({"simple", "relaxed"})
#: The largest file message read into memory for signing (bytes).
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
#: Signature algorithms dkimpy signs with (ed25519 needs PyNaCl).
ALGORITHMS = frozenset({"rsa-sha256", "ed25519-sha256"})


def _dkimpy() -> Any:
    try:
        import dkim  # type: ignore[import-untyped]  # dkimpy ships no type hints
    except ImportError:  # pragma: no cover - the extra is installed in the test env
        raise ImportError(
            "DKIM signing needs dkimpy: pip install 'fastsmtp[dkim]'"
        ) from None
    return dkim


@dataclass(frozen=True, slots=True)
class DKIMKey:
    """One signing key.

    Attributes:
        domain: The signing domain (``d=``), e.g. ``"example.com"``.
        selector: The selector (``s=``): the public key is published in DNS at
            ``<selector>._domainkey.<domain>``.
        private_key: The private key, PEM (PKCS#1 or PKCS#8), as bytes or text; for
            ``ed25519-sha256``, the base64 key dkimpy expects. Never shown by ``repr``.
        algorithm: ``"rsa-sha256"`` (default) or ``"ed25519-sha256"``.
    """

    domain: str
    selector: str
    private_key: bytes | str
    algorithm: str = "rsa-sha256"

    def __post_init__(self) -> None:
        for name in ("domain", "selector"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or not value.isascii() \
                    or any(c in value for c in "; \t\r\n"):
                raise ValueError(f"DKIM {name} must be a non-empty ASCII name, not {value!r}")
        if not isinstance(self.private_key, (bytes, str)) or not self.private_key:
            raise ValueError("DKIM private_key must be the PEM key as bytes or str")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"DKIM algorithm must be one of {', '.join(sorted(ALGORITHMS))}, "
                f"not {self.algorithm!r}"
            )

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return (f"DKIMKey(domain={self.domain!r}, selector={self.selector!r}, "
                f"algorithm={self.algorithm!r}, private_key=<hidden>)")

    @property
    def key_bytes(self) -> bytes:
        """The private key as bytes, as dkimpy takes it."""
        key = self.private_key
        return key.encode("ascii") if isinstance(key, str) else key


def _crlf(data: bytes) -> bytes:
    # The wire form: the connection normalizes line endings to CRLF while sending, so the
    # signature must be computed over CRLF lines or a bare LF would break it.
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class DKIMSigner:
    """Signs messages with one or more DKIM keys (the ``dkim`` connection option).

    Args:
        keys: A :class:`DKIMKey` or several (each adds one ``DKIM-Signature``, e.g. an
            RSA and an Ed25519 signature, or one per domain).
        headers: Header field names to sign (``h=``), case-insensitive; ``"from"`` must
            be among them. None: dkimpy's default, the RFC 6376 section 5.4.1 list.
        canonicalize: ``(header, body)`` canonicalisation, each ``"relaxed"`` or
            ``"simple"``; default ``("relaxed", "simple")`` (nodemailer's and dkimpy's).
        cache_size: Signed messages kept (0: none), keyed by the message object, so a
            pool's retry of the same message (a file, already read, too) sends the same
            signed bytes without signing again. Bounded: the oldest goes first.
        max_size: The largest file message read into memory for signing.

    Raises:
        ValueError: No key, a bad header list or canonicalisation, or a key that is not
            a private key.
    """

    __slots__ = ("keys", "headers", "canonicalize", "cache_size", "max_size", "_cache",
                 "_dkim")

    def __init__(
        self,
        keys: DKIMKey | Iterable[DKIMKey],
        *,
        headers: Sequence[str] | None = None,
        canonicalize: tuple[str, str] = ("relaxed", "simple"),
        cache_size: int = 0,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self._dkim = _dkimpy()
        key_list = [keys] if isinstance(keys, DKIMKey) else list(keys)
        if not key_list or not all(isinstance(k, DKIMKey) for k in key_list):
            raise ValueError("dkim needs at least one DKIMKey")
        self.keys: tuple[DKIMKey, ...] = tuple(key_list)
        if headers is not None:
            if isinstance(headers, str) or not all(isinstance(h, str) and h for h in headers):
                raise ValueError("DKIM headers must be a list of header field names")
            names = [h.strip().lower() for h in headers]
            if "from" not in names:
                raise ValueError("DKIM headers must include 'from' (RFC 6376 5.4)")
            self.headers: tuple[str, ...] | None = tuple(dict.fromkeys(names))
        else:
            self.headers = None
        if (not isinstance(canonicalize, (tuple, list)) or len(canonicalize) != 2
                or not set(canonicalize) <= CANONICALIZATIONS):
            raise ValueError("DKIM canonicalize must be (header, body), each "
                             "'relaxed' or 'simple'")
        self.canonicalize = (str(canonicalize[0]), str(canonicalize[1]))
        for name, value, least in (("cache_size", cache_size, 0), ("max_size", max_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"DKIM {name} must be an int of at least {least}")
        self.cache_size = cache_size
        self.max_size = max_size
        self._cache: OrderedDict[int, tuple[object, bytes]] | None = (
            OrderedDict() if cache_size else None
        )
        for key in self.keys:
            if key.algorithm == "rsa-sha256":
                # Fail when the option is made, not on the first message.
                try:
                    self._dkim.crypto.parse_pem_private_key(key.key_bytes)
                except Exception as exc:
                    raise ValueError(
                        f"DKIM private_key for {key.selector}._domainkey.{key.domain} "
                        f"is not a PEM RSA private key ({type(exc).__name__})"
                    ) from None

    def __repr__(self) -> str:
        return (f"DKIMSigner(keys={list(self.keys)!r}, headers={self.headers!r}, "
                f"canonicalize={self.canonicalize!r}, cache_size={self.cache_size})")

    @classmethod
    def coerce(cls, value: DKIMSigner | Mapping[str, Any]) -> DKIMSigner:
        """A signer from itself or a mapping (nodemailer's ``dkim`` object, either case).

        Keys: ``domain``/``domainName``, ``selector``/``keySelector``,
        ``private_key``/``privateKey``, ``algorithm``; or ``keys``, a list of such
        mappings; plus ``headers``/``headerFieldNames`` (a list or a colon-separated
        string), ``canonicalize``, ``cache_size``, ``max_size``.

        Raises:
            TypeError: Neither a signer nor a mapping.
            ValueError: A missing or bad entry.
        """
        if isinstance(value, DKIMSigner):
            return value
        if not isinstance(value, Mapping):
            raise TypeError("dkim must be a fastsmtp.dkim.DKIMSigner or a mapping "
                            "(domain, selector, private_key)")

        def key(m: Mapping[str, Any]) -> DKIMKey:
            try:
                return DKIMKey(
                    m.get("domain", m.get("domainName")),
                    m.get("selector", m.get("keySelector")),
                    m.get("private_key", m.get("privateKey")),
                    m.get("algorithm", "rsa-sha256"),
                )
            except TypeError:
                raise ValueError("a dkim key needs domain, selector and private_key") from None

        keys = [key(m) for m in value["keys"]] if "keys" in value else [key(value)]
        headers = value.get("headers", value.get("headerFieldNames"))
        if isinstance(headers, str):
            headers = [h for h in headers.split(":") if h.strip()]
        return cls(keys, headers=headers,
                   canonicalize=tuple(value.get("canonicalize", ("relaxed", "simple"))),
                   cache_size=value.get("cache_size", 0),
                   max_size=value.get("max_size", DEFAULT_MAX_SIZE))

    def sign(self, data: bytes) -> bytes:
        """Return ``data`` (a whole RFC 5322 message) with a ``DKIM-Signature`` per key.

        Line endings are made CRLF first (the wire form). The signatures go first, in
        key order.
        """
        data = _crlf(data)
        canon = (self.canonicalize[0].encode(), self.canonicalize[1].encode())
        include = None if self.headers is None else [h.encode() for h in self.headers]
        fields = []
        for key in self.keys:
            fields.append(self._dkim.sign(
                data, key.selector.encode(), key.domain.encode(), key.key_bytes,
                canonicalize=canon, signature_algorithm=key.algorithm.encode(),
                include_headers=include, linesep=b"\r\n",
            ))
        return b"".join(fields) + data

    def sign_payload(self, message: MessageSource, payload: Payload) -> bytes:
        """The transaction's hook: ``payload`` (from ``message_payload``) signed.

        Raises:
            SMTPInvalidMessage: A one-shot stream (refused, see the module docs), a file
                larger than ``max_size``, or a message dkimpy cannot sign (no From
                header, say). Nothing has been written.
        """
        cache = self._cache
        if cache is not None:
            hit = cache.get(id(message))
            # The entry holds the message itself, so its id cannot have been reused.
            if hit is not None and hit[0] is message:
                cache.move_to_end(id(message))
                return hit[1]
        if isinstance(payload, (bytes, bytearray, memoryview)):
            data = bytes(payload)
        elif hasattr(message, "read"):
            data = self._read_whole(payload)
        else:
            raise SMTPInvalidMessage(
                f"DKIM signing needs the whole message, and a {type(message).__name__} "
                "stream can be read only once: send bytes, an EmailMessage or a file "
                "(read into memory up to max_size), or join the chunks first"
            )
        try:
            signed = self.sign(data)
        except self._dkim.DKIMException as exc:
            raise SMTPInvalidMessage(f"DKIM signing failed: {exc}") from None
        if cache is not None:
            cache[id(message)] = (message, signed)
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        return signed

    def _read_whole(self, chunks: Any) -> bytes:
        out = bytearray()
        limit = self.max_size
        for chunk in chunks:
            out += chunk
            if len(out) > limit:
                raise SMTPInvalidMessage(
                    f"the file message is larger than the DKIM signer's max_size "
                    f"({limit} bytes): raise DKIMSigner(max_size=...)"
                )
        return bytes(out)
