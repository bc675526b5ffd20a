"""Runtime upstream secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography``
package) under ``server.secret_key``; ``server.secret_keys_previous`` still decrypt (``MultiFernet``), so
a rotation is: new key current, old key previous, restart, ``keyrelay keys rotate-secret``, drop the old.
"""
from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

NO_SECRET_KEY = (
    "Runtime keys are stored encrypted and no secret key is set: set KEYRELAY_SECRET_KEY (or "
    "server.secret_key in the config) to a Fernet key, e.g. the output of `keyrelay keys generate-secret`, "
    "and restart keyrelay.")


class NoSecretKey(Exception):
    """A runtime key cannot be stored or read: no secret key is configured."""

    def __init__(self) -> None:
        super().__init__(NO_SECRET_KEY)


class UndecryptableSecret(Exception):
    """A stored token that none of the configured secret keys opens (never carries the token)."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class Vault:
    def __init__(self, current: str | None, previous: tuple[str, ...] = ()) -> None:
        keys = [Fernet(k) for k in (current, *previous) if k]
        self._box = MultiFernet(keys) if current and keys else None

    @property
    def available(self) -> bool:
        return self._box is not None

    def encrypt(self, secret: str) -> str:
        if self._box is None:
            raise NoSecretKey()
        return self._box.encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        if self._box is None:
            raise NoSecretKey()
        try:
            return self._box.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise UndecryptableSecret("no configured secret key decrypts this runtime key") from None

    def rotate(self, token: str) -> str:
        """The token re-encrypted under the current key (raises UndecryptableSecret / NoSecretKey)."""
        if self._box is None:
            raise NoSecretKey()
        try:
            return self._box.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise UndecryptableSecret("no configured secret key decrypts this runtime key") from None
