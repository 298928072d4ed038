"""Users' own credentials for upstreams (the vault, docs/governance.md)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from registry import crypto
from registry.choices import AuthType
from registry.models.catalog import Gateway, clean_credentials

USER_CREDENTIAL_KINDS = (AuthType.BEARER, AuthType.BASIC, AuthType.HEADERS, AuthType.OAUTH_USER)


class UpstreamCredential(models.Model):
    """The vault: one user's own credentials for one gateway with ``per_user_credentials`` (encrypted with
    registry.crypto like the gateway's; never shown, exported or audited in clear)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upstream_credentials")
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="user_credentials")
    auth_type = models.CharField(max_length=16, choices=AuthType.choices)
    credentials_encrypted = models.TextField(editable=False)
    # OAuth per user: when the stored access token expires (None: unknown or not OAuth).
    expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "gateway"], name="upstream_credential_user_gateway")]
        ordering = ["gateway__name"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.gateway}"

    def get_credentials(self) -> dict[str, Any]:
        return crypto.decrypt_json(self.credentials_encrypted) if self.credentials_encrypted else {}

    def set_credentials(self, auth_type: str, credentials: dict[str, Any]) -> None:
        kind = AuthType(auth_type)
        if kind == AuthType.OAUTH_USER:
            token = credentials.get("access_token")
            if not isinstance(token, str) or not token or "\r" in token or "\n" in token:
                raise ValidationError({"credentials": "OAuth credentials need a non-empty 'access_token'."})
            keys = ("access_token", "refresh_token", "expires_at", "token_url")
            cleaned = {k: credentials[k] for k in keys if credentials.get(k)}
        elif kind in USER_CREDENTIAL_KINDS:
            cleaned = clean_credentials(kind, credentials)
        else:
            raise ValidationError({"auth_type": f"{kind.label} is not a kind of per-user credentials."})
        self.auth_type = kind
        self.credentials_encrypted = crypto.encrypt_json(cleaned)
