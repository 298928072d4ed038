"""Domain errors of the catalog, mapped once to HTTP (gateway_project.api) and JSON-RPC (protocol core)."""

from __future__ import annotations

from typing import Any


class CatalogError(Exception):
    """Base of the catalog's errors; ``message`` is shown to the caller as is."""

    status = 400

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or {}

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class NotFound(CatalogError):
    """The named entry does not exist."""

    status = 404


class Conflict(CatalogError):
    """The write would duplicate a unique name."""

    status = 409


class InvalidInput(CatalogError):
    """Field values break a rule of the catalog."""

    status = 422


class UnsupportedMediaType(CatalogError):
    """The request body is not in a media type the operation reads (JSON)."""

    status = 415


class SecretError(CatalogError):
    """A stored secret cannot be decrypted or a passphrase is wrong."""

    status = 422


class AuthenticationFailed(Exception):
    """Credentials are missing, malformed, expired, revoked or wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Forbidden(Exception):
    """The caller is authenticated but may not do this."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
