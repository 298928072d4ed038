"""SECRET_KEY unset: `make run` keeps a random key in .secret_key; where that file cannot be kept (the image's
read-only app directory) the process stops with one sentence saying to set SECRET_KEY, not an OSError's
traceback, and never runs with a key of its own (docs/deployment.md, "The image")."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_project.settings import BASE_DIR, _local_secret_key
from tests.live_gateway import ROOT


def test_the_key_is_made_once_and_kept_private(tmp_path):
    path = tmp_path / ".secret_key"
    key = _local_secret_key(path)
    assert len(key) >= 50
    assert path.stat().st_mode & 0o777 == 0o600
    assert _local_secret_key(path) == key


def test_a_directory_it_cannot_write_to_is_one_clear_error(tmp_path):
    """A directory that is not there (this test may run as root, which writes into read-only directories anyway)."""
    path = tmp_path / "app" / ".secret_key"
    with pytest.raises(ImproperlyConfigured) as refused:
        _local_secret_key(path)
    assert str(refused.value) == (
        f"SECRET_KEY is not set and {path} is not writable (No such file or directory): "
        "set SECRET_KEY (every replica must share it)."
    )
    assert refused.value.__suppress_context__


def test_a_read_only_file_system_is_one_clear_error(tmp_path, monkeypatch):
    """compose runs the image with read_only: true (simulated: root would need a mount)."""

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(ImproperlyConfigured, match=r"is not writable \(Read-only file system\): set SECRET_KEY"):
        _local_secret_key(tmp_path / ".secret_key")


def test_a_key_file_it_cannot_read_is_one_clear_error(tmp_path):
    path = tmp_path / ".secret_key"
    path.mkdir()
    with pytest.raises(ImproperlyConfigured, match=r"SECRET_KEY is not set and .* cannot be read \(Is a directory\)"):
        _local_secret_key(path)


def test_the_image_without_secret_key_stops_with_that_sentence():
    """As in the container: importing the settings meets a permission error writing .secret_key (simulated, since
    this test may run as root); the process exits 1 and its last line says what to set, with no PermissionError
    traceback behind it."""
    script = textwrap.dedent(
        """
        import errno, pathlib
        def refused(self, *args, **kwargs):
            if self.name != ".secret_key":
                return original_read(self, *args, **kwargs)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self))
        def read_only(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        original_read = pathlib.Path.read_text
        pathlib.Path.read_text = refused
        pathlib.Path.write_text = read_only
        import gateway_project.settings
        """
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DJANGO_SETTINGS_MODULE")}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set and {BASE_DIR / '.secret_key'} is not "
        "writable (Permission denied): set SECRET_KEY (every replica must share it)."
    )
    assert "PermissionError" not in out.stderr
