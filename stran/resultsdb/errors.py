"""Named errors of the results database. Each message says what is wrong and what to do."""

from __future__ import annotations


class ResultsDBError(Exception):
    """Base class: the results database could not do what was asked. Nothing was written."""


class InvalidRecordError(ResultsDBError, ValueError):
    """A detection result, correction or training run is missing a field or has a bad value.

    ``field`` is the dotted path of the offending field (``"study.slices"``), ``item`` the
    position in a batch (``"detections[2]"``) when the record came in one.
    """

    def __init__(self, message: str, *, field: str | None = None, item: str | None = None) -> None:
        self.field = field
        self.item = item
        super().__init__(f"{item}: {message}" if item else message)

    def in_item(self, item: str) -> InvalidRecordError:
        """The same error, located in a batch (``detections[2]``)."""
        return InvalidRecordError(str(self), field=self.field, item=item)


class ConflictError(ResultsDBError):
    """A record with the same id is already stored with different content.

    Ids are unique and records are immutable: sending the same record again is a no-op, sending
    different content under an id that is already used is refused (nothing is overwritten).
    """

    def __init__(self, message: str, *, kind: str, record_id: str, differences: dict[str, tuple[object, object]]) -> None:
        self.kind = kind
        self.record_id = record_id
        self.differences = differences
        super().__init__(message)

    @classmethod
    def of(cls, kind: str, record_id: str, diffs: dict[str, tuple[object, object]], why: str) -> ConflictError:
        """The error for ``kind`` ``record_id``, listing up to six differing fields, then ``why``."""
        if diffs:
            shown = "; ".join(f"{k}: stored {_short(a)}, new {_short(b)}" for k, (a, b) in list(diffs.items())[:6])
            more = f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""
            detail = f"differs in {shown}{more}"
        else:
            detail = "differs in content"
        return cls(
            f"{kind} {record_id!r} is already stored with different content ({detail}); nothing was written: {why}",
            kind=kind, record_id=record_id, differences=diffs,
        )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


class SchemaVersionError(ResultsDBError):
    """The database was written by a newer version of the software, or is not a results database."""
