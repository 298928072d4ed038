"""Federation's own records: the peer gateways it knows of (an approved peer becomes a registry Gateway)."""

from __future__ import annotations

from django.db import models

from federation.choices import PeerSource, PeerStatus
from registry.models import Gateway


class Peer(models.Model):
    """Another MCP Gateway, found by discovery; it joins the catalog as a Gateway once approved."""

    url = models.CharField(
        "base URL", max_length=2048, unique=True, help_text="The peer's base URL, e.g. https://gw2.example.com"
    )
    name = models.CharField(max_length=64, blank=True, help_text="The name it gives itself.")
    status = models.CharField(max_length=16, choices=PeerStatus.choices, default=PeerStatus.PENDING)
    source = models.CharField(max_length=16, choices=PeerSource.choices, default=PeerSource.MANUAL)
    discovered_via = models.CharField(max_length=2048, blank=True, help_text="The peer that listed it, if any.")
    depth = models.PositiveSmallIntegerField(default=0, help_text="Hops from this gateway's own peer list.")
    gateway = models.OneToOneField(
        Gateway, null=True, blank=True, on_delete=models.SET_NULL, related_name="peer", editable=False
    )
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["url"]

    def __str__(self) -> str:
        return self.name or self.url
