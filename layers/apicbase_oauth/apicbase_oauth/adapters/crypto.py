"""Token encryption with KMS, bound to the connection through the encryption context.

A ciphertext copied onto another connection's item does not decrypt there. The pair of tokens is
one KMS call each way: compact JSON of two tokens of at most 2040 characters that JSON does not
escape (model.TOKEN_RE) stays under KMS's 4096-byte plaintext limit.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import DependencyUnavailable, TokenUnreadable
from ..model import TokenPair

PURPOSE = "apicbase-oauth-tokens"
_UNREADABLE = {"InvalidCiphertextException", "IncorrectKeyException", "InvalidKeyUsageException"}


class TokenCipher:
    def __init__(self, kms_client: Any, key_id: str) -> None:
        self.kms = kms_client
        self.key_id = key_id

    @staticmethod
    def _context(connection_id: str) -> dict[str, str]:
        return {"connection_id": connection_id, "purpose": PURPOSE}

    def encrypt(self, connection_id: str, tokens: TokenPair) -> bytes:
        plaintext = json.dumps({"a": tokens.access_token, "r": tokens.refresh_token}, separators=(",", ":")).encode()
        try:
            result = self.kms.encrypt(
                KeyId=self.key_id, Plaintext=plaintext, EncryptionContext=self._context(connection_id)
            )
        except ClientError as exc:
            raise DependencyUnavailable(f"KMS refused to encrypt ({exc.response['Error']['Code']})") from None
        except BotoCoreError:
            raise DependencyUnavailable("KMS could not be reached") from None
        return bytes(result["CiphertextBlob"])

    def decrypt(self, connection_id: str, ciphertext: bytes) -> TokenPair:
        try:
            result = self.kms.decrypt(
                KeyId=self.key_id, CiphertextBlob=ciphertext, EncryptionContext=self._context(connection_id)
            )
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in _UNREADABLE:
                raise TokenUnreadable(
                    f"the stored tokens of connection {connection_id} do not decrypt for it"
                ) from None
            raise DependencyUnavailable(f"KMS refused to decrypt ({code})") from None
        except BotoCoreError:
            raise DependencyUnavailable("KMS could not be reached") from None
        try:
            data = json.loads(result["Plaintext"])
            return TokenPair(access_token=data["a"], refresh_token=data["r"])
        except (ValueError, KeyError, TypeError):
            raise TokenUnreadable(f"the stored tokens of connection {connection_id} are corrupt") from None
