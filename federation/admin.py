"""Admin of the peer gateways discovery found: review them and approve (they join the catalog as a
Gateway) or reject them. Status changes only through the actions, which call federation.peers."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from federation import peers
from federation.models import Peer
from registry.exceptions import CatalogError

DISCOVERY_FIELDS = (
    "name",
    "status",
    "source",
    "discovered_via",
    "depth",
    "gateway",
    "first_seen_at",
    "last_seen_at",
    "last_error",
)


class PeerForm(forms.ModelForm):  # type: ignore[type-arg]
    """Adding a peer by hand: the URL is checked as discovery would read it."""

    class Meta:
        model = Peer
        fields = ("url",)

    def clean_url(self) -> str:
        try:
            url = peers.normalize_url(self.cleaned_data["url"])
        except peers.PeerUrlError as exc:
            raise forms.ValidationError(f"Invalid peer URL: {exc}.") from None
        if Peer.objects.filter(url=url).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(f"The peer {url} is already known.")
        return url


@admin.register(Peer)
class PeerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Peers with what discovery learned about each; Approve / Reject as actions."""

    list_display = ("url", "name", "status", "source", "depth", "last_seen_at", "last_error")
    list_filter = ("status", "source", "depth")
    search_fields = ("url", "name", "discovered_via")
    actions = ("approve", "reject")
    fields = ("url", *DISCOVERY_FIELDS)
    form = PeerForm

    def get_readonly_fields(self, request: HttpRequest, obj: Peer | None = None) -> tuple[str, ...]:
        # The URL is typed once, when a peer is added by hand; the rest is discovery's.
        return DISCOVERY_FIELDS if obj is None else ("url", *DISCOVERY_FIELDS)

    def save_model(self, request: HttpRequest, obj: Peer, form: Any, change: bool) -> None:
        if change:
            return  # nothing a person may edit on an existing peer; status goes through the actions
        created = peers.peer_add(url=obj.url)
        obj.pk, obj.url = created.pk, created.url

    @admin.action(description="Approve selected peers (they join the catalog as gateways)")
    def approve(self, request: HttpRequest, queryset: QuerySet[Peer]) -> None:
        done, failed = 0, []
        for peer in queryset:
            try:
                peers.peer_approve(peer=peer)
                done += 1
            except CatalogError as exc:
                failed.append(f"{peer.url}: {exc.message}")
        if done:
            self.message_user(request, f"Approved {done} peer(s); each is now a gateway.", messages.SUCCESS)
        for sentence in failed:
            self.message_user(request, f"Could not approve {sentence}", messages.ERROR)

    @admin.action(description="Reject selected peers (discovery stops proposing them)")
    def reject(self, request: HttpRequest, queryset: QuerySet[Peer]) -> None:
        for peer in queryset:
            peers.peer_reject(peer=peer)
        self.message_user(request, f"Rejected {queryset.count()} peer(s).", messages.SUCCESS)
