"""The admin pages "Export the catalog" and "Import a catalog" (registry.admin.exchange_views): the download
is a JSON file that imports back; an import is previewed (a dry run that changes nothing) before "Apply this
import" applies exactly the previewed document; bad input is a form error, never a 500; secrets need the
right permissions; non-staff users are sent to the login page, staff without the permissions get 403; CSRF
holds on every form."""

import copy
import hashlib
import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from registry import events, exchange, services
from registry.admin.exchange_views import EXPORT_PERMISSIONS, IMPORT_PERMISSIONS, MAX_PENDING, SESSION_KEY
from registry.models import Gateway, Prompt, Tool
from tests.factories import UserFactory
from tests.registry.test_exchange import BEARER_SECRET, build_catalog, counts, wipe, without_timestamp

EXPORT = "/admin/catalog/export/"
IMPORT = "/admin/catalog/import/"
PASSPHRASE = "moving-day-passphrase-31"


@pytest.fixture
def client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def staff_with(*permissions: str) -> Client:
    """A client signed in as a staff user holding exactly these registry permissions."""
    user = UserFactory(username="staff-" + hashlib.sha256(repr(permissions).encode()).hexdigest()[:8], is_staff=True)
    codenames = [permission.split(".", 1)[1] for permission in permissions]
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="registry", codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def download(client: Client, **options) -> dict:
    response = client.post(EXPORT, options)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json"), form_errors(response)
    return json.loads(response.content)


def upload(text: str | bytes, name: str = "catalog.json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text, content_type="application/json")


def preview(client: Client, document=None, *, text: str | None = None, **options):
    """POST the import form with the document as a file (or pasted text); the dry-run page comes back."""
    data = {**options, "preview": "Preview the import"}
    if text is not None:
        data["text"] = text
    else:
        data["file"] = upload(json.dumps(document))
    return client.post(IMPORT, data)


def apply(client: Client, digest: str):
    return client.post(IMPORT, {"digest": digest, "apply": "Apply this import"})


def form_errors(response) -> dict:
    return response.context["form"].errors if response.context and "form" in response.context else {}


def all_errors(response) -> str:
    """The form's errors and the refusal of an apply, as one text."""
    messages = [message for messages in form_errors(response).values() for message in messages]
    return " ".join([*messages, response.context.get("refusal") or ""])


def digest_of(response) -> str:
    return response.context["pending"]["digest"]


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def test_the_url_names_are_the_ones_the_index_links_to():
    assert reverse("admin_catalog_export") == EXPORT
    assert reverse("admin_catalog_import") == IMPORT


def test_the_export_page_counts_what_the_export_holds(client):
    """Entries per kind, and how many gateways and tools hold credentials."""
    build_catalog()
    response = client.get(EXPORT)
    assert response.status_code == 200
    rows = {str(row["label"]): (row["count"], row["with_secrets"]) for row in response.context["counts"]}
    assert rows == {
        "gateways": (4, 2),
        "tools": (3, 0),
        "resources": (4, None),
        "resource templates": (2, None),
        "prompts": (2, None),
        "virtual servers": (2, None),
    }
    html = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in html
    assert '<label for="id_passphrase_again">Passphrase (again):</label>' in html


def test_the_download_is_a_timestamped_json_attachment_that_round_trips(client):
    """The file is mcp-gateway-catalog-<UTC stamp>.json, valid JSON; wiped and imported through the import page
    (preview, then apply), the catalog exports the same again."""
    build_catalog()
    before = counts()
    response = client.post(EXPORT, {})
    assert response.status_code == 200
    assert re.fullmatch(
        r'attachment; filename="mcp-gateway-catalog-\d{8}T\d{6}Z\.json"', response["Content-Disposition"]
    )
    document = json.loads(response.content.decode("utf-8"))
    assert document["format"] == "mcp-gateway-catalog"
    assert "secrets" not in document

    wipe()
    previewed = client.post(IMPORT, {"file": upload(response.content), "preview": "1"})
    assert previewed.status_code == 200, form_errors(previewed)
    assert previewed.context["total"]["created"] == 17
    assert not Tool.objects.exists()  # a preview only
    applied = apply(client, digest_of(previewed))
    assert applied.status_code == 200, form_errors(applied)
    assert applied.context["applied"]
    assert counts() == before
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(document)


def test_secrets_with_a_passphrase_travel_and_need_it_back(client):
    """Secrets encrypted with a passphrase: absent in the clear, back after an import with the same passphrase;
    a wrong or missing passphrase is a form error naming the problem, and nothing is imported."""
    build_catalog()
    document = download(client, include_secrets="on", passphrase=PASSPHRASE, passphrase_again=PASSPHRASE)
    assert document["secrets"]["encryption"] == "passphrase"
    assert BEARER_SECRET not in json.dumps(document)
    wipe()

    wrong = preview(client, document, passphrase="not-the-passphrase")
    assert "cannot be decrypted (wrong passphrase or keys)" in all_errors(wrong)
    missing = preview(client, document)
    assert "protected by a passphrase" in all_errors(missing)
    assert "pending" not in wrong.context
    assert "pending" not in missing.context

    previewed = preview(client, document, passphrase=PASSPHRASE)
    assert previewed.context["pending"]["passphrase"] is True
    stored = client.session[SESSION_KEY][digest_of(previewed)]
    assert PASSPHRASE not in json.dumps(stored)  # kept encrypted in the session
    apply(client, digest_of(previewed))
    assert Gateway.objects.get(name="http-up").get_credentials() == {"token": BEARER_SECRET}
    assert SESSION_KEY not in client.session or digest_of(previewed) not in client.session[SESSION_KEY]


def test_secrets_without_a_passphrase_use_this_installations_keys(client):
    build_catalog()
    document = download(client, include_secrets="on")
    assert document["secrets"] == {"encryption": "installation-keys"}
    assert any("credentials_encrypted" in gateway for gateway in document["gateways"])


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"include_secrets": "on", "passphrase": "one", "passphrase_again": "two"}, "passphrase_again", "differ"),
        ({"passphrase": "alone", "passphrase_again": "alone"}, "passphrase", "only protects secrets"),
    ],
    ids=["mismatch", "without-secrets"],
)
def test_passphrase_mistakes_are_form_errors(client, options, field, message):
    response = client.post(EXPORT, options)
    assert response.status_code == 200
    assert "Content-Disposition" not in response
    assert message in " ".join(form_errors(response)[field])


def test_exporting_secrets_needs_the_change_permissions(db):
    """A staff user who may only view the catalog exports it, but not with secrets: that is a form error."""
    build_catalog()
    viewer = staff_with(*EXPORT_PERMISSIONS)
    page = viewer.get(EXPORT)
    assert page.status_code == 200
    assert "needs the permission to change gateways and tools" in page.content.decode()

    refused = viewer.post(EXPORT, {"include_secrets": "on"})
    assert "Content-Disposition" not in refused
    assert "You may not export secrets" in " ".join(form_errors(refused)["include_secrets"])

    plain = download(viewer)
    assert "secrets" not in plain

    writer = staff_with(*EXPORT_PERMISSIONS, "registry.change_gateway", "registry.change_tool")
    assert "secrets" in download(writer, include_secrets="on")


# ---------------------------------------------------------------------------------------------
# Import: preview, apply
# ---------------------------------------------------------------------------------------------


def test_the_preview_shows_created_and_conflicts_and_changes_nothing(client):
    """What would be created and which entries conflict (with their differing fields), per kind; the
    database and the catalog version stay as they were."""
    build_catalog()
    document = exchange.catalog_export()
    Prompt.objects.filter(name="upstream.prompt").delete()
    services.entry_update(Tool.objects.get(name="weather.get"), data={"description": "changed here", "tags": ["x"]})
    version = events.catalog_version()

    response = preview(client, document)

    assert response.status_code == 200, form_errors(response)
    report = response.context["report"]
    assert report.dry_run is True
    assert report.created == {"prompts": ["upstream.prompt"]}
    assert report.conflicts == [{"kind": "tools", "key": "weather.get", "fields": ["description", "tags"]}]
    html = response.content.decode()
    assert "Preview (dry run, nothing changed)" in html
    assert "<code>weather.get</code></td>" in html
    assert "description, tags" in html
    assert 'value="Apply this import"' in html
    assert not Prompt.objects.filter(name="upstream.prompt").exists()
    assert Tool.objects.get(name="weather.get").description == "changed here"
    assert events.catalog_version() == version


def test_applying_changes_the_catalog_and_bumps_its_version(client):
    """Applying ("Apply this import") with overwrite replaces the conflicting entry and creates the missing one, in one
    catalog change; the kept preview is then gone, so applying it twice is refused."""
    build_catalog()
    document = exchange.catalog_export()
    Prompt.objects.filter(name="upstream.prompt").delete()
    services.entry_update(Tool.objects.get(name="weather.get"), data={"description": "changed here"})
    version = events.catalog_version()

    previewed = preview(client, document, overwrite="on")
    assert previewed.context["report"].updated == {"tools": ["weather.get"]}
    response = apply(client, digest_of(previewed))

    assert response.status_code == 200
    report = response.context["report"]
    assert report.dry_run is False
    assert report.created == {"prompts": ["upstream.prompt"]}
    assert report.updated == {"tools": ["weather.get"]}
    assert Prompt.objects.filter(name="upstream.prompt").exists()
    assert Tool.objects.get(name="weather.get").description == "Current weather ✓"
    assert events.catalog_version() == version + 1
    assert "What the import did" in response.content.decode()

    again = apply(client, digest_of(previewed))
    assert "no longer) kept here" in all_errors(again)
    assert events.catalog_version() == version + 1


def test_pasted_json_works_like_a_file(client):
    build_catalog()
    document = exchange.catalog_export()
    wipe()
    previewed = preview(client, text=json.dumps(document))
    assert previewed.context["pending"]["source"] == "pasted JSON"
    apply(client, digest_of(previewed))
    assert without_timestamp(exchange.catalog_export()) == without_timestamp(document)


def test_a_tampered_apply_is_refused(client):
    """An apply naming another digest than the previewed one (an edited page) imports nothing, and a document
    posted along with the apply is ignored: only the kept, previewed one can be applied."""
    build_catalog()
    document = exchange.catalog_export()
    wipe()
    previewed = preview(client, document)
    digest = digest_of(previewed)

    other = copy.deepcopy(document)
    other["prompts"].append({"name": "smuggled", "template": "x"})
    other_digest = hashlib.sha256(json.dumps(other).encode()).hexdigest()
    for forged in (other_digest, digest[:-1] + ("0" if digest[-1] != "0" else "1"), "not-a-digest", ""):
        refused = apply(client, forged)
        assert refused.status_code == 200
        assert "Nothing was imported" in all_errors(refused)
    assert not any(model_count for model_count in counts().values())

    response = client.post(IMPORT, {"digest": digest, "apply": "1", "text": json.dumps(other)})
    assert response.context["applied"]["digest"] == digest
    assert not Prompt.objects.filter(name="smuggled").exists()
    assert Prompt.objects.filter(name="summarise").exists()


def test_a_kept_document_that_no_longer_matches_its_digest_is_refused(client):
    """The digest is checked again on apply, against the kept document itself."""
    build_catalog()
    document = exchange.catalog_export()
    wipe()
    digest = digest_of(preview(client, document))
    session = client.session
    session[SESSION_KEY][digest]["document"] = json.dumps({**document, "prompts": []})
    session.save()
    refused = apply(client, digest)
    assert "does not match its digest" in all_errors(refused)
    assert not Tool.objects.exists()


def test_an_apply_whose_result_would_differ_from_the_preview_imports_nothing(client):
    """The catalog changed between preview and apply: nothing is imported, and the new preview is shown
    (with the conflict the change made), ready to apply."""
    build_catalog()
    document = exchange.catalog_export()
    Prompt.objects.filter(name="upstream.prompt").delete()
    previewed = preview(client, document)
    assert previewed.context["report"].created == {"prompts": ["upstream.prompt"]}
    services.entry_create(Prompt, data={"name": "upstream.prompt", "template": "Made here meanwhile."})
    version = events.catalog_version()

    response = apply(client, digest_of(previewed))

    assert response.context["changed_since_preview"] is True
    assert response.context["report"].dry_run is True
    assert [(c["kind"], c["key"]) for c in response.context["report"].conflicts] == [("prompts", "upstream.prompt")]
    assert Prompt.objects.get(name="upstream.prompt").template == "Made here meanwhile."
    assert events.catalog_version() == version
    # The new preview can be applied as shown.
    applied = apply(client, digest_of(response))
    assert applied.context["applied"]
    assert Prompt.objects.get(name="upstream.prompt").template == "Made here meanwhile."  # a conflict is kept


def test_the_session_keeps_a_bounded_number_of_previews(client):
    """Only the newest MAX_PENDING previews are kept; an older one is refused on apply."""
    digests = []
    for index in range(MAX_PENDING + 1):
        document = {"format": "mcp-gateway-catalog", "version": 1, "prompts": [{"name": f"p{index}", "template": "t"}]}
        digests.append(digest_of(preview(client, document)))
    assert set(client.session[SESSION_KEY]) == set(digests[1:])
    assert "Nothing was imported" in all_errors(apply(client, digests[0]))
    apply(client, digests[-1])
    assert list(Prompt.objects.values_list("name", flat=True)) == [f"p{MAX_PENDING}"]


# ---------------------------------------------------------------------------------------------
# Bad input: a form error naming the problem
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "mcp-gateway-catalog", ', "The pasted text is not JSON: Expecting property name"),
        ("[1, 2]", 'Not a catalog export: the document must be a JSON object with "format"'),
        ('{"format": "something-else"}', "Not a catalog export"),
        ('{"format": "mcp-gateway-catalog", "version": 9}', "Unsupported export version 9"),
        ('{"format": "mcp-gateway-catalog", "version": 1, "tools": {}}', "'tools' must be a list."),
        ('{"format": "mcp-gateway-catalog", "version": 1, "tools": [{"title": "x"}]}', "tools[0]: 'name' is required"),
        ('{"format": "mcp-gateway-catalog", "version": 1, "secrets": "x"}', "'secrets' must be a JSON object"),
        (
            '{"format": "mcp-gateway-catalog", "version": 1, "secrets": {"encryption": "installation-keys"},'
            ' "gateways": [{"name": "g", "url": "http://x/mcp", "credentials_encrypted": 5}]}',
            "gateways[0]: 'credentials_encrypted' must be a string",
        ),
        ("[" * 100_000, "nests JSON too deeply"),
        ("   ", "Upload a file or paste the JSON (one of them)."),
    ],
    ids=[
        "bad-json",
        "array",
        "format",
        "version",
        "kind-not-list",
        "entry",
        "secrets-not-object",
        "credentials-not-string",
        "too-deep",
        "empty",
    ],
)
def test_bad_documents_are_form_errors(client, text, message):
    version = events.catalog_version()
    response = preview(client, text=text)
    assert response.status_code == 200
    assert message in all_errors(response)
    assert "pending" not in response.context
    assert events.catalog_version() == version


def test_a_file_and_pasted_text_together_are_refused(client):
    response = client.post(IMPORT, {"file": upload("{}"), "text": "{}", "preview": "1"})
    assert "Upload a file or paste the JSON (one of them)." in all_errors(response)


def test_a_file_that_is_not_utf8_is_a_form_error(client):
    response = client.post(IMPORT, {"file": upload(b"\xff\xfe{\x00}\x00"), "preview": "1"})
    assert form_errors(response)["file"] == ["The file is not UTF-8 text."]


@override_settings(GATEWAY_MAX_BODY_BYTES=2048)
def test_documents_over_the_body_limit_are_refused_with_the_setting_named(client):
    """GATEWAY_MAX_BODY_BYTES, the API's body limit, bounds the document, uploaded or pasted."""
    big = json.dumps({"format": "mcp-gateway-catalog", "version": 1, "prompts": [], "pad": "x" * 3000})
    by_file = client.post(IMPORT, {"file": upload(big), "preview": "1"})
    assert form_errors(by_file)["file"] == [
        f"The document is {len(big):,} bytes, more than the limit of 2,048 bytes (GATEWAY_MAX_BODY_BYTES)."
    ]
    by_text = preview(client, text=big)
    assert "more than the limit of 2,048 bytes (GATEWAY_MAX_BODY_BYTES)" in " ".join(form_errors(by_text)["text"])
    assert "At most 2,048 bytes" in client.get(IMPORT).content.decode()


@override_settings(GATEWAY_MAX_BODY_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
def test_a_paste_over_djangos_own_form_limit_is_a_400_not_a_500(client):
    """The settings tie DATA_UPLOAD_MAX_MEMORY_SIZE to GATEWAY_MAX_BODY_BYTES: a pasted text over it is refused
    by Django before the page runs (a 400); a file that large still reaches the page and its form error."""
    big = "x" * 3000
    assert preview(client, text=big).status_code == 400
    assert "GATEWAY_MAX_BODY_BYTES" in all_errors(client.post(IMPORT, {"file": upload(big), "preview": "1"}))


# ---------------------------------------------------------------------------------------------
# Who may: staff with the permissions; CSRF
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [EXPORT, IMPORT])
def test_non_staff_users_are_sent_to_the_login_page(plain_user, url):
    client = Client()
    client.force_login(plain_user)
    for response in (client.get(url), client.post(url, {})):
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", [EXPORT, IMPORT])
def test_anonymous_users_are_sent_to_the_login_page(db, url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


def test_staff_without_the_permissions_get_403(db):
    """Export needs view on every kind; import needs add and change on every kind."""
    nothing = staff_with()
    assert nothing.get(EXPORT).status_code == 403
    assert nothing.get(IMPORT).status_code == 403
    almost = staff_with(*EXPORT_PERMISSIONS[:-1])
    assert almost.get(EXPORT).status_code == 403

    viewer = staff_with(*EXPORT_PERMISSIONS)
    assert viewer.get(EXPORT).status_code == 200
    assert viewer.get(IMPORT).status_code == 403
    assert viewer.post(IMPORT, {"text": "{}", "preview": "1"}).status_code == 403
    no_gateway_change = staff_with(*(p for p in IMPORT_PERMISSIONS if p != "registry.change_gateway"))
    assert no_gateway_change.get(IMPORT).status_code == 403

    importer = staff_with(*IMPORT_PERMISSIONS)
    assert importer.get(IMPORT).status_code == 200
    document = {"format": "mcp-gateway-catalog", "version": 1, "prompts": [{"name": "p", "template": "t"}]}
    apply(importer, digest_of(preview(importer, document)))
    assert Prompt.objects.filter(name="p").exists()


def test_csrf_holds_on_every_form(admin_user):
    """Posting without the token is refused (403) by the export, the preview and the apply."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    document = {"format": "mcp-gateway-catalog", "version": 1, "prompts": [{"name": "p", "template": "t"}]}
    assert client.post(EXPORT, {}).status_code == 403
    assert client.post(IMPORT, {"text": json.dumps(document), "preview": "1"}).status_code == 403
    assert client.post(IMPORT, {"digest": "0" * 64, "apply": "1"}).status_code == 403
    assert not Prompt.objects.exists()
    for url in (EXPORT, IMPORT):
        assert 'name="csrfmiddlewaretoken"' in client.get(url).content.decode()
