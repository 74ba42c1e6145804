"""One PACS over DICOMweb: find cine studies (QIDO-RS), fetch their images (WADO-RS), store results (STOW-RS).

A thin layer over ``dicomweb-client`` that adds what a user needs around it: credentials from options or the
environment (``STRAN_PACS_USER`` + ``STRAN_PACS_PASSWORD``, or ``STRAN_PACS_TOKEN``), never written into a URL, a
message or a log; and every failure as one ``PacsError`` that names the PACS (its URL without credentials), the
study and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from stran.errors import UserError

T = TypeVar("T")

#: Modalities whose series are never cine images (our own results among them); they are not fetched.
NOT_IMAGES = frozenset({"SR", "SEG", "PR", "KO", "DOC", "RTSTRUCT", "REG", "ECG"})
_SOP_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


class PacsError(UserError):
    """A PACS request that failed, said in one line with what to do (``hint``)."""


class PacsUnreachableError(PacsError):
    """No answer from the PACS (refused, timed out, name unknown)."""


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401 or 403)."""


class PacsNotFoundError(PacsError):
    """The PACS does not hold the study asked for."""


class PacsTransferError(PacsError):
    """A transfer that stopped or came back incomplete; nothing was kept."""


class PacsStudyError(PacsError):
    """The study is on the PACS but is not a cine study the loader accepts (no cine, missing frames)."""


@dataclass(frozen=True)
class Credentials:
    """HTTP basic (``user`` + ``password``) or bearer ``token``; ``from_options`` fills gaps from the environment."""

    user: str = ""
    password: str = ""
    token: str = ""

    @classmethod
    def from_options(cls, user: str | None = None, password: str | None = None, token: str | None = None,
                     env: dict[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        return cls(user or env.get("STRAN_PACS_USER", ""), password or env.get("STRAN_PACS_PASSWORD", ""),
                   token or env.get("STRAN_PACS_TOKEN", ""))

    def secrets(self) -> list[str]:
        """The values that must never appear in a message or a log."""
        return [s for s in (self.password, self.token) if s]


def split_url(url: str) -> tuple[str, Credentials]:
    """``url`` without user, password, query and fragment, and the credentials it held (``user:pw@host``)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"{public_url(url)!r} is not a DICOMweb URL",
                        "give the server's DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web")
    found = Credentials(parts.username or "", parts.password or "")
    return public_url(url), found


def public_url(url: str) -> str:
    """The URL as it may be shown or stored: no credentials, no query (it may hold a token)."""
    parts = urlsplit(url.strip())
    host = parts.netloc.rpartition("@")[2]  # keeps an IPv6 host's brackets and the port
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a study, as QIDO-RS describes it."""

    uid: str
    modality: str
    number: int | None
    description: str
    n_instances: int | None


@dataclass(frozen=True)
class StudyInfo:
    """One study, as QIDO-RS describes it."""

    uid: str
    patient_id: str
    date: str
    description: str
    modalities: tuple[str, ...]
    n_instances: int | None


def _value(item: dict[str, Any], tag: str, default: Any = None) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    if not values:
        return default
    value = values[0]
    return value.get("Alphabetic", default) if isinstance(value, dict) else value


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class PacsClient:
    """A DICOMweb server at ``url`` (its root, e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, credentials: Credentials | None = None, *, timeout_s: float = 60.0) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.url, in_url = split_url(url)
        creds = credentials or Credentials()
        self.credentials = Credentials(creds.user or in_url.user, creds.password or in_url.password, creds.token)
        session = requests.Session()
        if self.credentials.token:
            session.headers["Authorization"] = f"Bearer {self.credentials.token}"
        elif self.credentials.user:
            session.auth = (self.credentials.user, self.credentials.password)
        session.request = _with_timeout(session.request, timeout_s)  # type: ignore[method-assign]
        self._web = _complete_multipart(DICOMwebClient)(self.url, session=session)
        self._web.set_http_retry_params(retry=False)  # one clear answer; the user decides to try again

    def __repr__(self) -> str:
        return f"PacsClient({self.url!r})"

    # ------------------------------------------------------------------ errors

    def _redact(self, text: str) -> str:
        for secret in self.credentials.secrets():
            text = text.replace(secret, "***")
        return text

    def call(self, action: str, work: Callable[[], T], *, study: str = "") -> T:
        """Run one request (``work``); any failure becomes a ``PacsError`` saying ``action`` on which study."""
        import requests

        where = f"{action} on {self.url}" + (f" (study {study})" if study else "")
        try:
            return work()
        except PacsError:
            raise
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                raise PacsAuthError(
                    f"{where}: the PACS refused the credentials (HTTP {status})",
                    "set STRAN_PACS_USER and STRAN_PACS_PASSWORD, or STRAN_PACS_TOKEN (or the --pacs-user / "
                    "--pacs-token options) to an account the PACS accepts") from None
            if status == 404:
                raise PacsNotFoundError(f"{where}: the PACS does not hold it (HTTP 404)",
                                        "check the Study Instance UID and the DICOMweb URL") from None
            raise PacsError(f"{where}: the PACS answered HTTP {status}",
                            "check the PACS's log; try again when it answers") from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise PacsTransferError(f"{where}: the transfer stopped half way ({self._redact(str(exc))[:120]})",
                                    "nothing was kept; run the command again") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnreachableError(f"{where}: no answer from the PACS ({self._redact(_reason(exc))})",
                                       "check the URL, the network and that the PACS runs") from None
        except requests.RequestException as exc:
            raise PacsTransferError(f"{where}: {type(exc).__name__}: {self._redact(str(exc))[:200]}",
                                    "nothing was kept; run the command again") from None

    # ------------------------------------------------------------------ QIDO-RS

    def studies(self, *, limit: int | None = None) -> list[StudyInfo]:
        """Studies holding MR images (newest first as the PACS orders them), at most ``limit``."""
        found = self.call("listing studies", lambda: self._web.search_for_studies(
            search_filters={"ModalitiesInStudy": "MR"}, limit=limit,
            fields=["StudyDate", "StudyDescription", "PatientID", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]))
        return [StudyInfo(uid=str(_value(s, "0020000D", "")), patient_id=str(_value(s, "00100020", "")),
                          date=str(_value(s, "00080020", "")), description=str(_value(s, "00081030", "")),
                          modalities=tuple(str(m) for m in (s.get("00080061") or {}).get("Value") or []),
                          n_instances=_int(_value(s, "00201208"))) for s in found if _value(s, "0020000D")]

    def series(self, study_uid: str) -> list[SeriesInfo]:
        """Every series of a study."""
        found = self.call("listing series", lambda: self._web.search_for_series(
            study_uid, fields=["Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances"]),
            study=study_uid)
        return [SeriesInfo(uid=str(_value(s, "0020000E", "")), modality=str(_value(s, "00080060", "")),
                           number=_int(_value(s, "00200011")), description=str(_value(s, "0008103E", "")),
                           n_instances=_int(_value(s, "00201209"))) for s in found if _value(s, "0020000E")]

    def image_series(self, study_uid: str) -> list[SeriesInfo]:
        """The series that may hold cine images (not SR, SEG or other non-image objects such as our results)."""
        return [s for s in self.series(study_uid) if s.modality.upper() not in NOT_IMAGES]

    def is_cine_series(self, study_uid: str, series: SeriesInfo) -> bool:
        """Whether a series looks like cine MR, from one instance's header: several images per position over
        the cardiac cycle (TriggerTime or CardiacNumberOfImages), or an Enhanced MR with several frames."""
        if series.modality.upper() != "MR" or (series.n_instances or 0) < 1:
            return False
        instances = self.call("listing instances", lambda: self._web.search_for_instances(
            study_uid, series.uid, limit=1), study=study_uid)
        if not instances:
            return False
        sop = str(_value(instances[0], "00080018", ""))
        meta = self.call("reading an image header", lambda: self._web.retrieve_instance_metadata(
            study_uid, series.uid, sop), study=study_uid)
        if str(_value(meta, "00080016", "")) == _SOP_ENHANCED_MR:
            return (_int(_value(meta, "00280008")) or 1) > 1
        cardiac_images = _int(_value(meta, "00181090")) or 0
        return cardiac_images > 1 or ("00181060" in meta and (series.n_instances or 0) > 1)

    def cine_studies(self, *, limit: int | None = None) -> list[StudyInfo]:
        """The MR studies with at least one cine series (the loader decides in the end, when it is fetched)."""
        return [s for s in self.studies(limit=limit)
                if any(self.is_cine_series(s.uid, se) for se in self.image_series(s.uid))]

    # ------------------------------------------------------------------ WADO-RS / STOW-RS

    def iter_instances(self, study_uid: str, series_uid: str) -> Iterator[bytes]:
        """The series' instances as DICOM files (bytes, as the PACS sent them), streamed (errors as ``PacsError``)."""
        stream = self.call("fetching images", lambda: self._web.iter_series_files(study_uid, series_uid),
                           study=study_uid)
        while True:
            item = self.call("fetching images", lambda: next(stream, None), study=study_uid)
            if item is None:
                return
            yield item

    def instance(self, study_uid: str, series_uid: str, sop_uid: str) -> Any:
        """One instance as a pydicom Dataset (e.g. a report read back)."""
        return self.call("fetching an instance", lambda: self._web.retrieve_instance(study_uid, series_uid, sop_uid),
                         study=study_uid)

    def series_instances(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOP Instance UIDs of a series (empty when the PACS does not hold it)."""
        try:
            found = self.call("listing instances", lambda: self._web.search_for_instances(study_uid, series_uid),
                              study=study_uid)
        except PacsNotFoundError:
            return []
        return [str(_value(i, "00080018", "")) for i in found]

    def store(self, datasets: Sequence[Any], study_uid: str) -> None:
        """STOW-RS the datasets into their study; raises when the PACS reports any of them as failed."""
        answer = self.call("storing results", lambda: self._web.store_instances(list(datasets), study_uid),
                           study=study_uid)
        failed = getattr(answer, "FailedSOPSequence", None) if answer is not None else None
        if failed:
            reasons = ", ".join(f"{item.get('ReferencedSOPInstanceUID', '?')} (reason {item.get('FailureReason', '?')})"
                                for item in failed)
            raise PacsError(f"storing results on {self.url} (study {study_uid}): the PACS refused {reasons}",
                            "check the PACS's log; a retry writes the same UIDs, never a duplicate")


def _complete_multipart(base: type) -> type:
    """``base`` (dicomweb-client's client) refusing a multipart answer without its closing boundary.

    Orthanc, like many servers, sends WADO-RS answers without a length and closes the connection at the end; a
    connection cut half way then looks like a complete answer whose last part is cut short, which dicomweb-client
    hands on as an instance. Each part is held back until the next one arrives, and the last one only once the
    closing ``--boundary--`` has been seen; otherwise the transfer is reported as stopped."""
    import requests

    class CompleteMultipartClient(base):  # type: ignore[misc, valid-type]
        def iter_series_files(self, study_uid: str, series_uid: str) -> Iterator[bytes]:
            """WADO-RS of a series as the PACS stores it (any transfer syntax), each instance's file as bytes:
            written to disk as they are, never parsed and written again."""
            from dicomweb_client.web import _Transaction

            url = self._get_series_url(_Transaction.RETRIEVE, study_uid, series_uid)
            accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
            # No HTTP compression: pixel data barely compresses, and a PACS that gzips on the fly (Orthanc does
            # by default) spends longer on it than the transfer takes (training/bench_pacs.py).
            response = self._http_get(url, headers={"Accept": accept, "Accept-Encoding": "identity"}, stream=True)
            yield from self._decode_multipart_message(response, stream=True)

        def _decode_multipart_message(self, response: Any, stream: bool) -> Iterator[bytes]:
            marker = b""
            for item in response.headers.get("content-type", "").split(";"):
                key, _, value = item.strip().partition("=")
                if key.lower() == "boundary":
                    marker = b"--" + value.strip('"').encode() + b"--"
            tail = bytearray()
            if stream:
                chunks = response.iter_content

                def iter_content(*args: Any, **kwargs: Any) -> Iterator[bytes]:
                    for chunk in chunks(*args, **kwargs):
                        tail[:] = (bytes(tail) + chunk)[-(len(marker) + 64):]
                        yield chunk

                response.iter_content = iter_content
            held = None
            for part in super()._decode_multipart_message(response, stream):
                if held is not None:
                    yield held
                held = part
            end = bytes(tail) if stream else response.content[-(len(marker) + 64):]
            if marker and marker not in end:
                raise requests.exceptions.ChunkedEncodingError("the answer ended before its closing boundary")
            if held is not None:
                yield held

    return CompleteMultipartClient


def _with_timeout(request: Callable[..., Any], timeout_s: float) -> Callable[..., Any]:
    def call(method: str, url: str, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout_s)
        return request(method, url, **kwargs)

    return call


def _reason(exc: Exception) -> str:
    """The innermost cause of a connection error, without the URL requests repeats."""
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "No route to host",
                   "Temporary failure in name resolution", "Connection reset"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
