"""The token admin pages: "Issue a token" shows the token once (the list and the token's page never do), the
list's state/user/server filters and search, revoking from a token's page (with a confirmation) or with the
"Revoke selected tokens" action, after which the token gets 401; permissions (view, add, change = revoke)
and CSRF on every form."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from registry import auth
from registry.models import IssuedToken
from tests.conftest import ApiClient
from tests.factories import UserFactory, VirtualServerFactory

pytestmark = pytest.mark.django_db
LIST = "/admin/registry/issuedtoken/"
ADD = "/admin/registry/issuedtoken/add/"


def change_url(record: IssuedToken) -> str:
    return f"{LIST}{record.pk}/change/"


def revoke_url(record: IssuedToken) -> str:
    return f"{LIST}{record.pk}/revoke/"


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def pair(db):
    return VirtualServerFactory(name="pair")


def staff_with(*codenames: str):
    """A staff user (not superuser) holding only the given registry permissions."""
    user = UserFactory(username="operator", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="registry", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def issue(client, **fields) -> tuple:
    """POST the issue form; (response, the token shown on it or None)."""
    data = {"user": fields.pop("user"), "scopes": ["read", "call"], "expires": "1d", **fields}
    response = client.post(ADD, data)
    token = response.context["token"] if response.context and "token" in response.context else None
    return response, token


def test_the_issue_page_has_labelled_fields_and_the_default_lifetime(client, admin_user, pair, settings):
    """Every input has a label; the scopes are checkboxes; JWT_DEFAULT_EXPIRES_IN is preselected and marked;
    the signed-in user is the preselected one; the virtual servers are offered, none by default."""
    settings.JWT_DEFAULT_EXPIRES_IN = "30d"
    page = client.get(ADD)
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("user", "name", "expires", "custom_expires", "server"):
        assert f'<label for="id_{field}"' in html, field
    for scope in ("read", "call", "write"):
        assert f'type="checkbox" name="scopes" value="{scope}"' in html
    assert '<legend class="required">Scopes:</legend>' in html
    form = page.context["form"]
    assert form.fields["expires"].initial == "30d"
    assert ("30d", "30 days (the default)") in form.fields["expires"].choices
    assert form.initial["user"] == admin_user.pk
    assert 'value="pair"' not in html  # servers are offered by id
    assert ">pair</option>" in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_the_issue_page_can_preselect_a_server_and_a_user(client, pair, plain_user):
    """?server=<id> and ?user=<id> (e.g. a link from a virtual server's page) preselect them."""
    html = client.get(f"{ADD}?server={pair.pk}&user={plain_user.pk}").content.decode()
    assert f'<option value="{pair.pk}" selected>pair</option>' in html
    assert f'<option value="{plain_user.pk}" selected>reader' in html


def test_an_unlisted_default_lifetime_is_offered_first(client, settings):
    settings.JWT_DEFAULT_EXPIRES_IN = "12h"
    form = client.get(ADD).context["form"]
    assert form.fields["expires"].choices[0] == ("12h", "12h (the default, JWT_DEFAULT_EXPIRES_IN)")
    assert form.fields["expires"].initial == "12h"


def test_issuing_shows_the_token_once_with_the_client_configuration(client, admin_user, pair):
    """The answer to the form shows the token (which authenticates), the header line and the bound server's
    URL; it is not cacheable; the record has the name, scopes, server, lifetime and issuer."""
    response, token = issue(client, user=admin_user.pk, name="desktop", server=pair.pk, expires="30d")
    assert response.status_code == 200
    html = response.content.decode()
    assert token
    assert token in html
    assert f"Authorization: Bearer {token}" in html
    assert "URL: http://testserver/servers/pair/mcp" in html
    assert "only time it is shown" in html
    assert "no-store" in response["Cache-Control"]
    record = IssuedToken.objects.get()
    assert (record.user, record.name, record.scopes, record.server, record.issued_by) == (
        admin_user,
        "desktop",
        "call read",
        pair,
        "admin",
    )
    assert record.expires_at - record.issued_at == timedelta(days=30)
    assert auth.token_claims(token)["srv"] == "pair"


def test_an_unbound_token_gets_the_whole_catalog_url_and_works_on_the_api(client, admin_user):
    response, token = issue(client, user=admin_user.pk, scopes=["read"])
    assert "URL: http://testserver/mcp" in response.content.decode()
    assert ApiClient(f"Bearer {token}").get("/api/tools").status_code == 200


def test_the_token_is_never_shown_again(client, admin_user):
    """The list, the token's page and the revoke confirmation show the record, never the token or its signature."""
    _, token = issue(client, user=admin_user.pk, name="laptop")
    record = IssuedToken.objects.get()
    signature = token.rsplit(".", 1)[1]
    for url in (LIST, change_url(record), revoke_url(record)):
        html = client.get(url).content.decode()
        assert "laptop" in html, url
        assert signature not in html, url
        assert token not in html, url


def test_staff_may_issue_for_another_user_within_that_users_scopes(client, plain_user):
    """A token for a non-staff user cannot carry write: the form says so on the scopes and records nothing;
    without write it is issued to that user."""
    response, token = issue(client, user=plain_user.pk, scopes=["read", "write"])
    assert token is None
    assert "reader may not have write" in response.context["form"].errors["scopes"][0]
    assert not IssuedToken.objects.exists()
    _, token = issue(client, user=plain_user.pk, scopes=["read", "call"])
    assert IssuedToken.objects.get().user == plain_user
    assert auth.token_claims(token)["sub"] == "reader"


@pytest.mark.parametrize(
    ("custom", "error"),
    [("", "Type a duration"), ("soon", "is not a duration"), ("0m", "is not a duration")],
)
def test_a_bad_custom_duration_is_a_field_error(client, admin_user, custom, error):
    response, token = issue(client, user=admin_user.pk, expires="custom", custom_expires=custom)
    assert token is None
    assert error in response.context["form"].errors["custom_expires"][0]
    assert not IssuedToken.objects.exists()


def test_a_custom_duration_sets_the_lifetime(client, admin_user):
    issue(client, user=admin_user.pk, expires="custom", custom_expires="45m")
    record = IssuedToken.objects.get()
    assert record.expires_at - record.issued_at == timedelta(minutes=45)


@pytest.mark.parametrize("custom", ["99999999w", "9999999999w"])
def test_an_overlong_duration_is_a_field_error_not_a_500(client, admin_user, custom):
    """Past what a date can hold (the expiry, or the duration itself): a message on the form."""
    response, token = issue(client, user=admin_user.pk, expires="custom", custom_expires=custom)
    assert response.status_code == 200
    assert token is None
    errors = response.context["form"].errors
    assert "too long" in (errors.get("custom_expires") or errors.get("expires"))[0]


def test_missing_scopes_and_unknown_choices_are_field_errors(client, admin_user):
    response = client.post(ADD, {"user": admin_user.pk, "expires": "1d"})
    assert "scopes" in response.context["form"].errors
    response = client.post(ADD, {"user": 99999, "scopes": ["read"], "expires": "2y", "server": 12345})
    assert set(response.context["form"].errors) == {"user", "expires", "server"}
    assert not IssuedToken.objects.exists()


def test_the_list_shows_state_and_filters_by_state_user_server_and_search(client, admin_user, plain_user, pair):
    """Columns user, name, scopes, server, issued, expires, state; filters by state, user and server; search
    by name."""
    bound = auth.issued_token_create(username="admin", name="bound-one", server="pair").record
    revoked = auth.issued_token_create(username="reader", name="gone-one").record
    auth.token_revoke(token_or_jti=revoked.jti)
    expired = auth.issued_token_create(username="admin", name="old-one").record
    IssuedToken.objects.filter(pk=expired.pk).update(expires_at=expired.issued_at - timedelta(seconds=1))

    def names(query: str = "") -> set[str]:
        response = client.get(LIST + query)
        assert response.status_code == 200
        return {token.name for token in response.context["cl"].result_list}

    assert names() == {"bound-one", "gone-one", "old-one"}
    html = client.get(LIST).content.decode()
    for text in ("token-active", "token-revoked", "token-expired", "all (not bound)", "Issue a token"):
        assert text in html, text
    assert names("?state=active") == {"bound-one"}
    assert names("?state=revoked") == {"gone-one"}
    assert names("?state=expired") == {"old-one"}
    assert names(f"?user__id__exact={plain_user.pk}") == {"gone-one"}
    assert names(f"?server__id__exact={pair.pk}") == {"bound-one"}
    assert names("?server__isnull=True") == {"gone-one", "old-one"}
    assert names("?q=old") == {"old-one"}
    assert bound.state == "active"


def test_revoking_from_the_tokens_page_asks_then_revokes_and_the_token_gets_401(client, admin_user):
    """The token's page links to "Revoke this token"; GET asks (a form with CSRF), POST revokes and returns to
    the token's page, which no longer offers it; the token is then refused with 401."""
    _, token = issue(client, user=admin_user.pk, name="laptop")
    record = IssuedToken.objects.get()
    api = ApiClient(f"Bearer {token}")
    assert api.get("/api/tools").status_code == 200
    page = client.get(change_url(record)).content.decode()
    assert f'href="{revoke_url(record)}"' in page
    assert 'name="_save"' not in page  # nothing to edit
    confirm = client.get(revoke_url(record))
    assert confirm.status_code == 200
    assert 'name="csrfmiddlewaretoken"' in confirm.content.decode()
    assert IssuedToken.objects.get().revoked_at is None  # a GET changes nothing
    done = client.post(revoke_url(record))
    assert done.status_code == 302
    assert done["Location"] == change_url(record)
    assert IssuedToken.objects.get().state == "revoked"
    after = client.get(change_url(record)).content.decode()
    assert f'href="{revoke_url(record)}"' not in after
    response = api.get("/api/tools")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_the_revoke_action_confirms_then_revokes_the_selected_tokens(client, admin_user):
    first = auth.issued_token_create(username="admin", name="one")
    second = auth.issued_token_create(username="admin", name="two")
    kept = auth.issued_token_create(username="admin", name="three")
    selected = [str(first.record.pk), str(second.record.pk)]
    confirm = client.post(LIST, {"action": "revoke_selected", "_selected_action": selected})
    assert confirm.status_code == 200
    assert "Revoke the selected tokens?" in confirm.content.decode()
    assert not IssuedToken.objects.filter(revoked_at__isnull=False).exists()
    done = client.post(LIST, {"action": "revoke_selected", "_selected_action": selected, "post": "yes"})
    assert done.status_code == 302
    assert set(IssuedToken.objects.filter(revoked_at__isnull=False).values_list("name", flat=True)) == {"one", "two"}
    for issued, status in ((first, 401), (second, 401), (kept, 200)):
        assert ApiClient(f"Bearer {issued.token}").get("/api/tools").status_code == status
    again = client.post(LIST, {"action": "revoke_selected", "_selected_action": selected, "post": "yes"}, follow=True)
    assert "were revoked already" in again.content.decode()


def test_the_list_offers_revoke_not_delete(client):
    auth.issued_token_create(username="admin")
    actions = dict(client.get(LIST).context["action_form"].fields["action"].choices)
    assert "revoke_selected" in actions
    assert "delete_selected" not in actions


def test_deleting_a_record_by_url_revokes_the_token(client, admin_user):
    issued = auth.issued_token_create(username="admin")
    response = client.post(f"{LIST}{issued.record.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not IssuedToken.objects.exists()
    assert ApiClient(f"Bearer {issued.token}").get("/api/tools").status_code == 401


# ---------------------------------------------------------------------------------------------
# Permissions and CSRF
# ---------------------------------------------------------------------------------------------


def test_anonymous_and_non_staff_users_reach_no_token_page(admin_user):
    record = auth.issued_token_create(username="admin").record
    plain = Client()
    plain.force_login(UserFactory(username="plain", is_staff=False))
    for visitor in (Client(), plain):
        for url in (LIST, ADD, change_url(record), revoke_url(record)):
            response = visitor.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
        for url, data in (
            (ADD, {"user": admin_user.pk, "scopes": ["read"], "expires": "1d"}),
            (revoke_url(record), {}),
            (LIST, {"action": "revoke_selected", "_selected_action": [str(record.pk)], "post": "yes"}),
        ):
            response = visitor.post(url, data)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
    assert IssuedToken.objects.count() == 1
    assert IssuedToken.objects.get().revoked_at is None


def test_view_permission_lists_but_neither_issues_nor_revokes(admin_user):
    record = auth.issued_token_create(username="admin").record
    viewer = staff_with("view_issuedtoken")
    page = viewer.get(LIST)
    assert page.status_code == 200
    assert "Issue a token" not in page.content.decode()
    assert page.context["action_form"] is None  # no action it may take
    assert viewer.get(ADD).status_code == 403
    assert viewer.post(ADD, {"user": admin_user.pk, "scopes": ["read"], "expires": "1d"}).status_code == 403
    assert f'href="{revoke_url(record)}"' not in viewer.get(change_url(record)).content.decode()
    assert viewer.get(revoke_url(record)).status_code == 403
    assert viewer.post(revoke_url(record)).status_code == 403
    viewer.post(LIST, {"action": "revoke_selected", "_selected_action": [str(record.pk)], "post": "yes"})
    assert IssuedToken.objects.get().revoked_at is None
    assert IssuedToken.objects.count() == 1


def test_add_permission_issues_and_change_permission_revokes(admin_user):
    issuer = staff_with("view_issuedtoken", "add_issuedtoken")
    operator = get_user_model().objects.get(username="operator")
    _, token = issue(issuer, user=operator.pk)
    assert token
    record = IssuedToken.objects.get()
    assert issuer.post(revoke_url(record)).status_code == 403
    revoker = staff_with("view_issuedtoken", "change_issuedtoken")
    assert revoker.get(ADD).status_code == 403
    assert revoker.post(revoke_url(record)).status_code == 302
    assert IssuedToken.objects.get().state == "revoked"


def test_every_token_form_refuses_a_post_without_csrf(admin_user):
    record = auth.issued_token_create(username="admin").record
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    for url, data in (
        (ADD, {"user": admin_user.pk, "scopes": ["read"], "expires": "1d"}),
        (revoke_url(record), {}),
        (LIST, {"action": "revoke_selected", "_selected_action": [str(record.pk)], "post": "yes"}),
    ):
        assert client.post(url, data).status_code == 403, url
    assert IssuedToken.objects.count() == 1
    assert IssuedToken.objects.get().revoked_at is None
    for url in (LIST, ADD, change_url(record), revoke_url(record)):
        assert client.get(url).status_code == 200, url


def test_staff_who_are_not_superusers_issue_only_for_themselves_and_non_staff(admin_user, plain_user):
    """No token that acts as a superuser or another staff user from someone who is neither."""
    issuer = staff_with("view_issuedtoken", "add_issuedtoken")
    other_staff = UserFactory(username="other-staff", is_staff=True)
    for forbidden in (admin_user, other_staff):
        response, token = issue(issuer, user=forbidden.pk)
        assert token is None
        assert "Select a valid choice" in str(response.context["form"].errors["user"])
    _, token = issue(issuer, user=plain_user.pk, scopes=["read"])
    assert token
    assert IssuedToken.objects.get().user == plain_user
