"""A real PACS for the tests: Debian's Orthanc with its DICOMweb plugin (``stran.pacs.orthanc.LocalOrthanc``).

Registered for the whole suite by tests/conftest.py, so any test under tests/ can ask for:

- ``orthanc`` (session): one Orthanc on a free 127.0.0.1 port, storage in a temporary folder, no authentication;
- ``pacs`` (function): the same server, emptied first (``delete_all``): each test starts with no study;
- ``orthanc_auth`` (session): a second one with HTTP basic auth, user ``reader`` / ``AUTH_PASSWORD`` (not emptied:
  call ``delete_all()`` when the test needs an empty PACS).

Their ``dicomweb_url`` is the DICOMweb root, ``upload(files)`` stores DICOM files, ``count_instances()`` counts them.
Without Orthanc installed the tests that use them are skipped, saying what to run (``make setup-pacs``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stran.pacs.orthanc import LocalOrthanc

AUTH_USER = "reader"
AUTH_PASSWORD = "s3cret-pacs-pw"


def _serve(users: dict[str, str] | None) -> Iterator[LocalOrthanc]:
    from stran.pacs.orthanc import LocalOrthanc, OrthancNotInstalledError

    server = LocalOrthanc(users=users)
    try:
        server.start()
    except OrthancNotInstalledError as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def orthanc() -> Iterator[LocalOrthanc]:
    """One Orthanc (DICOMweb, no authentication) for the session."""
    yield from _serve(None)


@pytest.fixture
def pacs(orthanc: LocalOrthanc) -> LocalOrthanc:
    """The session's Orthanc, emptied: the test starts with no study."""
    orthanc.delete_all()
    return orthanc


@pytest.fixture(scope="session")
def orthanc_auth() -> Iterator[LocalOrthanc]:
    """An Orthanc with HTTP basic auth (``AUTH_USER`` / ``AUTH_PASSWORD``) for the session."""
    yield from _serve({AUTH_USER: AUTH_PASSWORD})
