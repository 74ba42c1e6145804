"""User mistakes as one line: which errors mean "the user can fix this", and what the line says.

Commands raise errors; ``stran.cli.main`` turns the ones listed here into
``stran <command>: error: <message> (<what to do>)`` on stderr and exit status 2. Anything else is a bug.
Standard library only, and no imports of the error classes: an error can only be an instance of a class whose
module is already loaded, so classes are recognised by their qualified names.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

USAGE_EXIT = 2  # a user mistake, as argparse's own usage errors
BUG_EXIT = 1


class UserError(Exception):
    """A mistake the user can fix (a bad option value, a missing default model): ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


# Qualified class name -> what to do ("" when the messages already say it). First match along the MRO wins.
_KNOWN: dict[str, str] = {
    "stran.io.errors.TruncatedFileError": "the file is incomplete or damaged: copy or export the study again",
    "stran.io.errors.UnsupportedFormatError": "a study is a DICOM folder or file, or a 4-D .nii/.nii.gz",
    "stran.io.errors.CineLoadError": "",
    "stran.engine.labels.LabelError": "correct the label file or CSV",
    "stran.engine.evaluate.HeldOutOverlapError": "",
    "stran.models.checkpoint.CheckpointError": "",
    "stran.engine.trainer.TrainingStateMismatch": "",
    "stran.resultsdb.errors.InvalidRecordError": "correct the record or leave it out",
    "stran.resultsdb.errors.ConflictError": "",
    "stran.resultsdb.errors.SchemaVersionError": "",
    "stran.resultsdb.errors.ResultsDBError": "check the --db path or URL",
    "sqlalchemy.exc.OperationalError": "check the --db URL and that the database server runs and accepts you",
    "sqlalchemy.exc.ArgumentError": "give a SQLite file path or a URL such as postgresql://user@host/dbname",
    "json.decoder.JSONDecodeError": "check the JSON text",
    "builtins.FileNotFoundError": "check the path",
    "builtins.PermissionError": "check its permissions or choose another path",
    "builtins.NotADirectoryError": "a file is in the way of that folder: choose another path",
    "builtins.FileExistsError": "a file is in the way of that folder: choose another path",
    "builtins.IsADirectoryError": "give a file, not a folder",
    "builtins.OSError": "check the path, its permissions and the free disk space",
}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _os_message(exc: OSError) -> str:
    if exc.filename is None or exc.strerror is None:
        return str(exc)
    where = os.fsdecode(exc.filename) + (f" -> {os.fsdecode(exc.filename2)}" if exc.filename2 else "")
    return f"{exc.strerror.lower()}: {where}"


def user_error_line(command: str, exc: BaseException) -> str | None:
    """``stran <command>: error: <message> (<what to do>)`` when ``exc`` is a user mistake, else None."""
    if isinstance(exc, UserError):
        message, hint = str(exc), exc.hint
    else:
        for cls in type(exc).__mro__:
            hint = _KNOWN.get(_qualified(cls))
            if hint is not None:
                break
        else:
            return None
        is_plain_os = isinstance(exc, OSError) and _qualified(cls).startswith("builtins.")
        message = _os_message(exc) if is_plain_os else str(exc)
    message = _one_line(message) or type(exc).__name__
    return f"stran {command}: error: {message}" + (f" ({_one_line(hint)})" if hint else "")


def bug_line(command: str, exc: BaseException) -> str:
    """The one line for an unexpected error (a bug): what it was and how to get the traceback."""
    text = _one_line(str(exc))
    what = type(exc).__name__ + (f": {text}" if text else "")
    return (f"stran {command}: internal error: {what} (this is a bug: rerun with `stran --debug {command} ...` "
            f"for the traceback and report it)")


def output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create ``path`` if needed and check that a file can be written in it, before any long work."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        raise UserError(f"cannot write in the output folder {folder.absolute()}: {reason}",
                        f"choose another {option} or fix its permissions") from exc
    return folder
