"""CineScar's non-GUI library: the MONAI Label client, the review workflow, the module's logic, MRML building and
the server's image files (read and written by Slicer's own reader). Each module is tested without the Slicer application (tests/slicer).

What each needs:

- the standard library only: ``errors`` (every exception, ``is_offline``), ``cancel`` (progress callbacks,
  ``CancelToken``, ``run_cancellable``), ``multipart``, ``jobs`` (worker threads, the panel's job slots and
  progress view), ``panel`` (the widget's signals, enabled buttons and texts), ``database`` (the module's
  results-database set-up), ``packages`` (SQLAlchemy or matplotlib installed after asking; it imports ``slicer``
  only to ask and to install), ``dicom_folder``;
- plus numpy: ``volume`` (``Volume4D``), ``records`` (server status, studies, detections), ``segments`` (with ``aha``),
  ``selftest`` (the self-test; ``slicer`` only inside the tests that show a scene);
- plus requests: ``client`` (the MONAI Label REST client), ``session`` (``ScarSession``: connection, studies,
  detection, export), ``corrections`` (corrections and their offline queue) and ``training`` (retraining until
  live), both mixins of ``ScarSession``, and ``dicom_study``. These run outside Slicer too (``stran demo``, which
  gives the session a nibabel reader instead of ``volumefile``);
- ``slicer`` (the application, or the slicer-core wheel): ``volumefile`` (the server's 4-D NIfTI files through
  Slicer's sequence reader and writer), the scene: ``sequences``, ``scores``, ``mrml``, ``highlight``, and
  ``snapshot`` (a slice view rendered offscreen), and ``logic`` (``ScarLogic``, which CineScar.py's
  ``CineScarLogic`` extends);
- SQLAlchemy: ``resultsdb``; matplotlib: ``report`` and ``study_report`` (the study report).

Nothing is imported here, so importing the package costs nothing and needs nothing.

Three parts of CineScarLib have one source in the project's ``stran`` package (one implementation for the command
line and the module; each uses relative imports only, or none) -- the table ``FROM_PROJECT`` below:

- ``CineScarLib.resultsdb`` is ``stran/resultsdb`` (a package: the results database);
- ``CineScarLib.aha`` is ``stran/report/aha.py`` (a module: the AHA 17-segment bullseye geometry);
- ``CineScarLib.report`` is ``stran/report/render.py`` (a module: the study report page; needs matplotlib).

In the built or installed extension they are real files, ``CineScarLib/resultsdb/``, ``aha.py`` and ``report.py``,
copied from ``stran`` by ``CineScar/CMakeLists.txt``; Python finds them as usual. In a checkout of the repository
(the module folder added to Slicer's module paths) they do not exist: the finder below loads the ``stran`` file or
folder in place under the ``CineScarLib`` name, on first import, not before.
"""

import sys
from importlib.util import spec_from_file_location
from pathlib import Path

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent
# <repository>/slicer_extension/CineScar/CineScarLib/__init__.py -> <repository>
_REPOSITORY = _HERE.parent.parent.parent

#: CineScarLib name -> (its source in a checkout, whether it is a package, its file or folder in the built extension)
FROM_PROJECT = {
    __name__ + ".resultsdb": (_REPOSITORY / "stran" / "resultsdb", True, _HERE / "resultsdb"),
    __name__ + ".aha": (_REPOSITORY / "stran" / "report" / "aha.py", False, _HERE / "aha.py"),
    __name__ + ".report": (_REPOSITORY / "stran" / "report" / "render.py", False, _HERE / "report.py"),
}


def _built(name: str) -> bool:
    _source, package, copy = FROM_PROJECT[name]
    return (copy / "__init__.py").is_file() if package else copy.is_file()


class _FromSourceTree:
    """Import hook for the names of ``FROM_PROJECT`` only, consulted after Python's own finders."""

    cinescar_source_finder = True  # marks instances, so that a reloaded package replaces its hook

    def __init__(self, table: dict) -> None:
        self.table = dict(table)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.table or _built(fullname):  # a built copy: Python's own finders take it
            return None
        source, package, copy = self.table[fullname]
        origin = source / "__init__.py" if package else source
        if not origin.is_file():
            what = "stran/" + source.relative_to(_REPOSITORY / "stran").as_posix()
            raise ModuleNotFoundError(
                f"{fullname} is missing: {copy} does not exist (the built extension has it) "
                f"and neither does {source} (a checkout of the repository has it). Run the module from a "
                f"full checkout, or build the extension with CMake, which copies {what} into CineScarLib.",
                name=fullname,
            )
        if package:
            return spec_from_file_location(fullname, origin, submodule_search_locations=[str(source)])
        return spec_from_file_location(fullname, origin)

    def invalidate_caches(self) -> None:
        pass


sys.meta_path[:] = [f for f in sys.meta_path  # also the older, resultsdb-only hook of a reloaded module
                    if not (getattr(f, "cinescar_source_finder", False) or getattr(f, "cinescar_resultsdb_finder", False))]
sys.meta_path.append(_FromSourceTree(FROM_PROJECT))
