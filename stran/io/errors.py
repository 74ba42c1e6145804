"""Named errors for cine loading. Each message says what is wrong, with which files, and what to do."""

from __future__ import annotations


class CineLoadError(Exception):
    """Base class: a study could not be loaded. Nothing was written."""

    def __init__(self, message: str, files: list[str] | None = None) -> None:
        self.files = list(dict.fromkeys(str(f) for f in files or []))
        if self.files:
            shown = ", ".join(self.files[:5]) + (f" and {len(self.files) - 5} more" if len(self.files) > 5 else "")
            message = f"{message} [files: {shown}]"
        super().__init__(message)


class NoCineSeriesError(CineLoadError):
    """No short-axis cine series (several slices x several phases) was found."""


class SingleSliceError(CineLoadError):
    """Only one slice position: a cine stack needs at least two."""


class SinglePhaseError(CineLoadError):
    """Only one cardiac phase per slice: not a cine."""


class InconsistentGeometryError(CineLoadError):
    """Matrix size, pixel spacing or orientation differ between images of one stack."""


class UnreadablePixelDataError(CineLoadError):
    """Pixel data that cannot be decoded (missing, compressed without a decoder, corrupt)."""


class TruncatedFileError(CineLoadError):
    """A file ends before its declared content (interrupted copy or export)."""


class MixedFrameOfReferenceError(CineLoadError):
    """Slices of one stack come from different frames of reference (different scans or patients)."""


class StudyTooLargeError(CineLoadError):
    """The study would need more memory than the configured guard allows."""


class UnsupportedFormatError(CineLoadError):
    """The path is neither a DICOM folder/file nor a NIfTI file we can read."""


class AmbiguousStackError(CineLoadError):
    """Images cannot be assigned to one (slice, phase) cell unambiguously (e.g. two images share position and trigger time)."""


class StudyNotFoundError(CineLoadError, FileNotFoundError):
    """The path given does not exist."""


class MissingPhaseError(CineLoadError):
    """A slice of the cine stack lacks one or more phases because the files that hold them cannot be read.

    ``missing`` lists ``(slice_index, phase_index, file)`` (0-based, in the study's slice and phase order; ``file``
    is the unreadable file when it is known to be that image, else one of the unreadable files of that series).
    """

    def __init__(self, message: str, files: list[str] | None = None,
                 missing: list[tuple[int, int, str]] | None = None) -> None:
        super().__init__(message, files)
        self.missing = list(missing or [])
