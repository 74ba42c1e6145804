"""The module's results database: where it is, SQLAlchemy installed after asking, storing and counting.

:class:`DatabaseMixin` is the database part of :class:`~.logic.ScarLogic`. GUI-free: installing after asking is
:mod:`.packages` (the question and the install can be given instead, in tests). The database itself is the
session's (:mod:`.session`, ``resultsdb``).
"""

from __future__ import annotations

import os

from . import packages

SQLALCHEMY_REQUIREMENT = "SQLAlchemy>=2.0,<3"


def default_database_path() -> str:
    """``~/CineScar/results.sqlite``: the database file until the user chooses another."""
    return os.path.join(os.path.expanduser("~"), "CineScar", "results.sqlite")


def install_question(why: str = "") -> str:
    """What the module asks before installing SQLAlchemy into Slicer's Python (``why``: the action needing it)."""
    return (f"{why}\n\n" if why else "") + (
        "The results database needs the Python package SQLAlchemy, which is not installed in Slicer's "
        f"Python. Install it now ({SQLALCHEMY_REQUIREMENT}, about 3 MB from PyPI)?")


def database_summary(counts: dict) -> str:
    """One line for the panel from ``ResultsDB.counts()``."""
    return f"{counts.get('detections', 0)} detections, {counts.get('corrections', 0)} corrections in the database."


class DatabaseMixin:
    """Uses the logic's ``session`` (a :class:`~.session.ScarSession` or None), ``detection`` and
    ``requireSession``; keeps ``databaseLocation``, ``databaseEnabled`` and ``autoExport`` (set by the logic's
    ``__init__``)."""

    def setDatabaseLocation(self, location):
        self.databaseLocation = (location or "").strip() or None
        if self.session is not None:
            self.session.set_database(self.databaseLocation if self.databaseEnabled else None)

    def setAutoExport(self, enabled):
        self.autoExport = bool(enabled)
        if self.session is not None:
            self.session.auto_export = self.autoExport

    @staticmethod
    def sqlalchemyAvailable():
        return packages.available("sqlalchemy")

    def ensureDatabase(self, ask=True, why="", confirm=None, install=None):
        """Make the results database usable: SQLAlchemy present (installed after asking), location set."""
        if not self.databaseLocation:
            return False
        if not packages.ensure("sqlalchemy", SQLALCHEMY_REQUIREMENT, install_question(why), ask=ask, confirm=confirm,
                               install=install, check=self.sqlalchemyAvailable):
            return False
        self.databaseEnabled = True
        if self.session is not None and not self.session.has_database:
            self.session.set_database(self.databaseLocation)
        return True

    def pendingCount(self):
        if self.session is None or not self.databaseEnabled or not self.sqlalchemyAvailable():
            return 0
        try:
            return len(self.session.pending_corrections())
        except Exception:  # noqa: BLE001 - a count for display only
            return 0

    def exportDetection(self):
        if self.detection is None:
            raise RuntimeError("No result yet: run a detection first.")
        return self.requireSession().export_detection(self.detection)

    def exportCsv(self, folder):
        return self.requireSession().export_csv(folder)

    def databaseSummary(self):
        try:
            counts = self.requireSession().db.counts()
        except Exception as exc:  # noqa: BLE001 - for display only
            return f"(database: {exc})"
        return database_summary(counts)
