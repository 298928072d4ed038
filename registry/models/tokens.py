"""The bearer tokens this gateway issued, and the ones it no longer accepts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from registry.models.catalog import VirtualServer


class RevokedToken(models.Model):
    """A JWT id (jti) that is no longer accepted, kept until the token would have expired anyway."""

    jti = models.CharField(max_length=128, unique=True)
    subject = models.CharField(max_length=150, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=256, blank=True)

    class Meta:
        ordering = ["-revoked_at"]

    def __str__(self) -> str:
        return self.jti


class IssuedToken(models.Model):
    """A bearer token this gateway issued: whose, what it may do, where, until when; never the token itself."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    jti = models.CharField("token id (jti)", max_length=128, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="issued_tokens")
    NAME_MAX_LENGTH = 128

    name = models.CharField(
        max_length=NAME_MAX_LENGTH, blank=True, help_text="What the token is for, as its issuer put it."
    )
    scopes = models.CharField(max_length=64, help_text="Space-separated: read, write, call.")
    # A bound token opens only this server's endpoints. CASCADE, not SET_NULL: a null server means "every
    # server", so SET_NULL would widen the token when its server goes. With CASCADE the record goes with the
    # server and registry.auth refuses a bound token that has no record, so deleting a server retires its
    # tokens and a new server of the same name never inherits them. (PROTECT would make a server with any
    # token ever bound to it, even long expired, impossible to delete.)
    server = models.ForeignKey(
        VirtualServer,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="issued_tokens",
        help_text="Empty: the whole catalog and every virtual server.",
    )
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    issued_by = models.CharField(max_length=150, blank=True, help_text="Who issued it (a username, or a command).")

    class Meta:
        ordering = ["-issued_at", "-pk"]
        indexes = [models.Index(fields=["user", "-issued_at"])]

    def __str__(self) -> str:
        return f"{self.name or self.jti} ({self.user})"

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    @property
    def state(self) -> str:
        """Revoked, expired or active, as of now."""
        if self.revoked_at is not None:
            return self.State.REVOKED
        if self.expires_at <= timezone.now():
            return self.State.EXPIRED
        return self.State.ACTIVE
