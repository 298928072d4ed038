"""Settings for the test suite: the production settings with fast hashing and fixed keys.

DATABASE_URL and REDIS_URL are honoured, so `make test` runs against PostgreSQL and Redis when
they are set, and against SQLite and in-memory backends otherwise.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")

from gateway_project.settings import *  # noqa: F403
from gateway_project.settings import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123456789abcdef"
GATEWAY_ENCRYPTION_KEYS = []
# The tests' API servers listen on loopback; the refusal of private addresses is tested with the
# backend built without this.
GATEWAY_OUTBOUND_ALLOW_PRIVATE = True
GATEWAY_FUNCTION_TOOLS = ["tests.fixtures.functions.*"]
# Tests run periodic work themselves (or start their own worker, beat or gateway process).
GATEWAY_SCHEDULER = "off"
GATEWAY_STATS_PUBLISH_SECONDS = 0  # no publisher thread in the test process (tests that want one start it)
GATEWAY_AUDIT_FLUSH_SECONDS = 0  # no audit writer thread in the test process (tests flush on demand)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}
    DATABASES["default"]["OPTIONS"].pop("init_command", None)
else:
    # A scratch database of this run's own (pytest-django creates and drops it), so two test runs on
    # one PostgreSQL server never share or drop each other's database.
    DATABASES["default"]["TEST"] = {"NAME": f"test_mcpgw_{os.getpid()}"}
