"""Token encryption: envelope encryption with a KMS data key, bound to the connection.

A pair is sealed locally with AES-256-GCM under a data key that KMS generated for that connection
(``GenerateDataKey``, the connection id in the encryption context); the sealed blob carries the
data key as KMS encrypted it. So the key material to seal a refreshed pair is in hand BEFORE
Apicbase is called, and nothing but one DynamoDB write stands between its answer and durability.

Blob: ``ABE1`` | u16 length | encrypted data key | 12-byte nonce | ciphertext and tag. The
associated data binds the purpose, the format version and the connection id: a blob copied onto
another connection does not open there. Opened data keys are cached per container (bounded, at
most five minutes), so a warm read of a token makes no KMS call. Blobs written before envelopes
(a KMS ciphertext of the pair) still open, with one KMS Decrypt.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import DependencyUnavailable, TokenUnreadable
from ..model import TokenPair, immutable

PURPOSE = "apicbase-oauth-tokens"
MAGIC = b"ABE1"
NONCE_BYTES = 12
KEY_CACHE_SIZE = 1024
KEY_CACHE_SECONDS = 300
_UNREADABLE = {"InvalidCiphertextException", "IncorrectKeyException", "InvalidKeyUsageException"}


@immutable
class DataKey:
    """A data key for one connection: the plaintext to seal with, and KMS's encryption of it."""

    connection_id: str
    plaintext: bytes = field(repr=False)
    encrypted: bytes = field(repr=False)


def _aad(connection_id: str) -> bytes:
    return f"{PURPOSE}|v1|{connection_id}".encode()


def _aesgcm(key: bytes) -> Any:
    # Imported on first use: the cryptography binding costs ~50 ms to import, which a cold
    # start should not pay before it needs it (docs/BENCHMARKS.md).
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    return AESGCM(key)


class TokenCipher:
    def __init__(
        self,
        kms_client: Any,
        key_id: str,
        *,
        now: Callable[[], float] = time.monotonic,
        cache_size: int = KEY_CACHE_SIZE,
    ) -> None:
        self.kms = kms_client
        self.key_id = key_id
        self.now = now
        self.cache_size = cache_size
        self._keys: OrderedDict[bytes, tuple[DataKey, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _context(connection_id: str) -> dict[str, str]:
        return {"connection_id": connection_id, "purpose": PURPOSE}

    def data_key(self, connection_id: str) -> DataKey:
        """A fresh data key for the connection (one KMS call), cached for opening what it seals."""
        result = self._kms(
            self.kms.generate_data_key,
            KeyId=self.key_id,
            KeySpec="AES_256",
            EncryptionContext=self._context(connection_id),
        )
        key = DataKey(connection_id, bytes(result["Plaintext"]), bytes(result["CiphertextBlob"]))
        self._remember(key)
        return key

    def seal(self, key: DataKey, tokens: TokenPair) -> bytes:
        """Local AES-256-GCM: no KMS call, so it cannot fail the way a network call can."""
        plaintext = json.dumps({"a": tokens.access_token, "r": tokens.refresh_token}, separators=(",", ":")).encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = _aesgcm(key.plaintext).encrypt(nonce, plaintext, _aad(key.connection_id))
        return MAGIC + struct.pack(">H", len(key.encrypted)) + key.encrypted + nonce + sealed

    def encrypt(self, connection_id: str, tokens: TokenPair) -> bytes:
        """Seal under a fresh data key (seeding and imports; refreshes take the key first)."""
        return self.seal(self.data_key(connection_id), tokens)

    def decrypt(self, connection_id: str, blob: bytes) -> TokenPair:
        if not blob.startswith(MAGIC):
            return self._parse(connection_id, self._kms_decrypt(connection_id, blob))
        try:
            (length,) = struct.unpack_from(">H", blob, len(MAGIC))
            start = len(MAGIC) + 2
            encrypted, nonce = blob[start : start + length], blob[start + length : start + length + NONCE_BYTES]
            sealed = blob[start + length + NONCE_BYTES :]
        except struct.error:
            raise TokenUnreadable(f"the stored tokens of connection {connection_id} are corrupt") from None
        key = self._cached(encrypted, connection_id)
        if key is None:
            key = DataKey(connection_id, self._kms_decrypt(connection_id, encrypted), encrypted)
            self._remember(key)
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415 (loaded with AESGCM above)

        try:
            plaintext = _aesgcm(key.plaintext).decrypt(nonce, sealed, _aad(connection_id))
        except (InvalidTag, ValueError):
            raise TokenUnreadable(f"the stored tokens of connection {connection_id} do not decrypt for it") from None
        return self._parse(connection_id, plaintext)

    # --- the data-key cache ------------------------------------------------------------------
    def _remember(self, key: DataKey) -> None:
        with self._lock:
            self._keys[key.encrypted] = (key, self.now())
            self._keys.move_to_end(key.encrypted)
            while len(self._keys) > self.cache_size:
                self._keys.popitem(last=False)

    def _cached(self, encrypted: bytes, connection_id: str) -> DataKey | None:
        with self._lock:
            entry = self._keys.get(encrypted)
            if entry is None:
                return None
            key, opened_at = entry
            if self.now() - opened_at > KEY_CACHE_SECONDS:
                del self._keys[encrypted]
                return None
        # A key opened for another connection is not this one's: KMS decides, with the context.
        return key if key.connection_id == connection_id else None

    # --- KMS -----------------------------------------------------------------------------------
    def _kms_decrypt(self, connection_id: str, ciphertext: bytes) -> bytes:
        result = self._kms(
            self.kms.decrypt,
            KeyId=self.key_id,
            CiphertextBlob=ciphertext,
            EncryptionContext=self._context(connection_id),
            unreadable=f"the stored tokens of connection {connection_id} do not decrypt for it",
        )
        return bytes(result["Plaintext"])

    @staticmethod
    def _kms(fn: Callable[..., Any], *, unreadable: str | None = None, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if unreadable and code in _UNREADABLE:
                raise TokenUnreadable(unreadable) from None
            raise DependencyUnavailable(f"KMS refused the request ({code})") from None
        except BotoCoreError:
            raise DependencyUnavailable("KMS could not be reached") from None

    @staticmethod
    def _parse(connection_id: str, plaintext: bytes) -> TokenPair:
        try:
            data = json.loads(plaintext)
            return TokenPair(access_token=data["a"], refresh_token=data["r"])
        except (ValueError, KeyError, TypeError):
            raise TokenUnreadable(f"the stored tokens of connection {connection_id} are corrupt") from None
