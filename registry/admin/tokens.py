"""The token admin: the tokens this gateway issued (whose, scopes, virtual server, expiry, state; never the
token itself), "Issue a token" (the token is shown once, on the page that answers the form), and revoking
one token (a button on its page, with a confirmation) or many (an action on the list).

Permissions: view_issuedtoken to list, add_issuedtoken to issue, change_issuedtoken to revoke (nothing
on a token is editable, so "change" means revoke). Every write goes through ``registry.auth``, as the
REST API and the commands do."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import ActionLocation
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from registry import auth
from registry.choices import Scope
from registry.conf import parse_duration
from registry.exceptions import InvalidInput
from registry.models import IssuedToken, VirtualServer

SCOPE_HELP = {
    Scope.READ: "read: list and read the catalog (tools/list, resources, prompts; GET on the REST API)",
    Scope.CALL: "call: call tools",
    Scope.WRITE: "write: change the catalog through the REST API (staff users only)",
}
LIFETIMES = [
    ("1h", "1 hour"),
    ("1d", "1 day"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("365d", "1 year"),
]
CUSTOM = "custom"


def lifetime_choices() -> tuple[list[tuple[str, str]], str]:
    """The expiry choices and the one selected first: JWT_DEFAULT_EXPIRES_IN, marked as the default."""
    default = str(settings.JWT_DEFAULT_EXPIRES_IN).strip().lower()
    try:
        default_delta = parse_duration(default)
    except ValueError:  # a bad setting is reported by `manage.py check`; offer the fixed choices
        default_delta = None
    choices, initial, matched = [], LIFETIMES[2][0], False
    for value, label in LIFETIMES:
        if default_delta is not None and parse_duration(value) == default_delta:
            label, initial, matched = f"{label} (the default)", value, True
        choices.append((value, label))
    if default_delta is not None and not matched:
        choices.insert(0, (default, f"{default} (the default, JWT_DEFAULT_EXPIRES_IN)"))
        initial = default
    choices.append((CUSTOM, "Custom duration (below)"))
    return choices, initial


class UserChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.get_username()} ({'staff' if obj.is_staff else 'not staff: read and call only'})"


class IssueTokenForm(forms.Form):
    """Who the token is for, what it may do, for how long, and optionally the one virtual server it opens."""

    user = UserChoiceField(
        queryset=get_user_model().objects.none(),
        help_text="The token acts as this user, with at most the scopes they may have. Superusers may issue "
        "tokens for any active user; other staff for themselves and for users who are not staff.",
    )
    name = forms.CharField(
        max_length=IssuedToken.NAME_MAX_LENGTH,
        required=False,
        help_text="What the token is for, e.g. \u201claptop: Claude Desktop\u201d; shown in the token list.",
    )
    scopes = forms.MultipleChoiceField(
        choices=[(scope, SCOPE_HELP[scope]) for scope in (Scope.READ, Scope.CALL, Scope.WRITE)],
        widget=forms.CheckboxSelectMultiple,
        help_text="Pick at least one.",
    )
    expires = forms.ChoiceField(label="Expires after", choices=[])
    custom_expires = forms.CharField(
        label="Custom duration",
        required=False,
        max_length=16,
        help_text="With \u201cCustom duration\u201d: a number and a unit s, m, h, d or w, e.g. 45m, 12h, 2w.",
    )
    server = forms.ModelChoiceField(
        label="Virtual server",
        queryset=VirtualServer.objects.none(),
        required=False,
        empty_label="None: the whole catalog, every virtual server and the REST API",
        help_text="A token bound to a virtual server opens only that server's MCP endpoints "
        "(/servers/<name>/mcp, sse, ws, rpc): not /mcp, not other servers, not the REST API.",
    )

    def __init__(self, *args: Any, issuer: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        user_model = get_user_model()
        users = user_model.objects.filter(is_active=True)
        if not issuer.is_superuser:  # no token that acts as another staff user or a superuser
            users = users.filter(Q(pk=issuer.pk) | Q(is_staff=False, is_superuser=False))
        self.fields["user"].queryset = users.order_by(user_model.USERNAME_FIELD)  # type: ignore[attr-defined]
        self.fields["server"].queryset = VirtualServer.objects.order_by("name")  # type: ignore[attr-defined]
        choices, initial = lifetime_choices()
        self.fields["expires"].choices = choices  # type: ignore[attr-defined]
        self.fields["expires"].initial = initial
        self.fields["scopes"].initial = [Scope.READ, Scope.CALL, Scope.WRITE]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        user, scopes = data.get("user"), data.get("scopes")
        if user is not None and scopes:
            allowed = auth.user_scopes(user)
            refused = sorted(set(scopes) - allowed)
            if refused:
                self.add_error(
                    "scopes",
                    f"{user.get_username()} may not have {', '.join(refused)} (they may have "
                    f"{', '.join(sorted(allowed)) or 'nothing'}); untick it.",
                )
        if data.get("expires") == CUSTOM:
            text = (data.get("custom_expires") or "").strip()
            if not text:
                self.add_error("custom_expires", "Type a duration such as 45m, 12h or 2w, or pick a listed one.")
            else:
                try:
                    data["lifetime"] = parse_duration(text)
                except ValueError as exc:
                    self.add_error("custom_expires", f"{exc}.")
                except OverflowError:
                    self.add_error("custom_expires", "That duration is too long.")
        elif data.get("expires"):
            data["lifetime"] = parse_duration(data["expires"])
        return data


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(value), str(label)) for value, label in IssuedToken.State.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in IssuedToken.State.values:
            return queryset.filter(auth.issued_token_state_filter(str(self.value())))
        return queryset


def endpoint_url(request: HttpRequest, server: str | None) -> str:
    """The Streamable HTTP URL of the whole catalog or of one virtual server, at this gateway's address."""
    base = request.build_absolute_uri("/").rstrip("/")
    return f"{base}/servers/{server}/mcp" if server else f"{base}/mcp"


@admin.register(IssuedToken)
class IssuedTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Issued tokens: listed, issued (shown once) and revoked; nothing on a token is editable."""

    list_display = ["label", "user", "scope_names", "server_shown", "issued_at", "expires_at", "state_shown"]
    list_filter = [StateFilter, ("user", admin.RelatedOnlyFieldListFilter), ("server", admin.RelatedFieldListFilter)]
    search_fields = ["jti", "name", "user__username", "server__name", "issued_by"]
    list_select_related = ["user", "server"]
    list_per_page = 50
    actions = ["revoke_selected"]
    SHOWN = ("jti", "user", "name", "scopes", "server_shown", "issued_at", "expires_at", "revoked_at", "issued_by")
    fields = SHOWN
    readonly_fields = SHOWN

    # -- permissions: view to list, add to issue, change to revoke; the page itself is read-only --------------

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def get_actions(self, request: HttpRequest, action_location: Any = ActionLocation.CHANGE_LIST) -> dict[str, Any]:
        # Deleting a record is not how a token is stopped; the list offers "Revoke" instead.
        actions = super().get_actions(request, action_location=action_location)
        actions.pop("delete_selected", None)
        return actions

    # -- columns ----------------------------------------------------------------------------------------------

    @admin.display(description="name", ordering="name")
    def label(self, obj: IssuedToken) -> str:
        return obj.name or f"(unnamed) {obj.jti[:8]}\u2026"

    @admin.display(description="scopes")
    def scope_names(self, obj: IssuedToken) -> str:
        return ", ".join(obj.scope_list)

    @admin.display(description="virtual server", ordering="server__name")
    def server_shown(self, obj: IssuedToken) -> str:
        return obj.server.name if obj.server is not None else "all (not bound)"

    @admin.display(description="state")
    def state_shown(self, obj: IssuedToken) -> str:
        state = obj.state
        style = {"revoked": "color: var(--error-fg)", "expired": "color: var(--body-quiet-color)"}.get(state, "")
        return format_html('<span class="token-state token-{}" style="{}">{}</span>', state, style, state)

    # -- pages --------------------------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        revoke = path(
            "<path:object_id>/revoke/",
            self.admin_site.admin_view(self.revoke_view),
            name="{}_{}_revoke".format(*info),
        )
        return [revoke, *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        obj = self.get_object(request, object_id)
        context = {
            **(extra_context or {}),
            "show_delete": False,
            "can_revoke": obj is not None
            and obj.state != IssuedToken.State.REVOKED
            and self.has_revoke_permission(request, obj),
        }
        return super().change_view(request, object_id, form_url, context)

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        """ "Issue a token": the form, then the token, shown on the answer to the POST and never again."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        # ?server=<id> preselects a virtual server (a server's page can link here), ?user=<id> another user.
        initial = {"user": request.GET.get("user") or request.user.pk, "server": request.GET.get("server")}
        form = IssueTokenForm(request.POST or None, initial=initial, issuer=request.user)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                issued = auth.issued_token_create(
                    username=data["user"].get_username(),
                    expires_in=data["lifetime"],
                    scopes=list(data["scopes"]),
                    name=data["name"],
                    server=data["server"].name if data["server"] else None,
                    issued_by=request.user.get_username(),
                )
            except InvalidInput as exc:
                placed = False
                for key, errors in exc.errors.items():
                    lifetime_field = "custom_expires" if data["expires"] == CUSTOM else "expires"
                    field = lifetime_field if key == "expires_in" else key
                    if field in form.fields:
                        form.add_error(field, errors)
                        placed = True
                if not placed:
                    form.add_error(None, exc.message)
            else:
                self.log_addition(request, issued.record, [{"added": {}}])
                server = issued.record.server.name if issued.record.server else None
                context = {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "title": "Token issued",
                    "token": issued.token,
                    "record": issued.record,
                    "endpoint": endpoint_url(request, server),
                }
                return TemplateResponse(request, "admin/registry/issuedtoken/issued.html", context)
        context = {
            **self.admin_site.each_context(request),
            **(extra_context or {}),
            "opts": self.opts,
            "title": "Issue a token",
            "form": form,
        }
        return TemplateResponse(request, "admin/registry/issuedtoken/issue.html", context)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A token's "Revoke" button: GET asks to confirm, POST revokes (CSRF-protected by the admin)."""
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404(f"No issued token with id {object_id!r}.")
        if not self.has_revoke_permission(request, obj):
            raise PermissionDenied
        change_url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
        if request.method == "POST":
            self._revoke(request, self.get_queryset(request).filter(pk=obj.pk))
            return HttpResponseRedirect(change_url)
        return self._confirm(request, [obj], single=True, cancel_url=change_url)

    @admin.action(description="Revoke selected tokens", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        if request.POST.get("post") == "yes":
            self._revoke(request, queryset)
            return None
        cancel = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        return self._confirm(request, list(queryset), single=False, cancel_url=cancel)

    def _revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        count = auth.issued_tokens_revoke(
            tokens=queryset, reason=f"revoked in the admin by {request.user.get_username()}"
        )
        if count:
            self.message_user(
                request,
                f"Revoked {count} token{'s' if count != 1 else ''}: refused from now on (by every gateway process "
                f"within GATEWAY_AUTH_CACHE_SECONDS={settings.GATEWAY_AUTH_CACHE_SECONDS}s).",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "Nothing to revoke: the selected tokens were revoked already.", messages.WARNING)

    def _confirm(self, request: HttpRequest, tokens: list[IssuedToken], *, single: bool, cancel_url: str) -> Any:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Revoke this token?" if single else "Revoke the selected tokens?",
            "tokens": tokens,
            "single": single,
            "cancel_url": cancel_url,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/registry/issuedtoken/revoke_confirmation.html", context)

    # -- deleting a record (e.g. by URL) revokes the token first: a token must not keep working unlisted -----

    def delete_model(self, request: HttpRequest, obj: IssuedToken) -> None:
        auth.issued_tokens_delete(tokens=IssuedToken.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        auth.issued_tokens_delete(tokens=queryset)
