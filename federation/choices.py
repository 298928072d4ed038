"""Enumerations of federation."""

from django.db import models


class PeerStatus(models.TextChoices):
    """Whether a discovered peer gateway joins the catalog."""

    PENDING = "pending", "Pending approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class PeerSource(models.TextChoices):
    """How a peer became known."""

    STATIC = "static", "GATEWAY_PEERS setting"
    PEER = "peer", "Listed by another peer"
    MDNS = "mdns", "DNS-SD / mDNS on the local network"
    MANUAL = "manual", "Added by hand"
