"""CineScar's non-GUI library: NIfTI IO, the MONAI Label client, the review workflow and MRML building.

``nifti``, ``client``, ``jobs`` and ``session`` need only the standard library,
numpy and requests (they also run outside Slicer, e.g. in ``stran demo``);
``mrml`` needs ``slicer`` (Slicer, or the slicer-core wheel); ``resultsdb`` needs
SQLAlchemy. Nothing is imported here, so importing the package costs nothing and needs nothing.

``CineScarLib.resultsdb`` is the project's ``stran/resultsdb`` (one implementation of the
results database for the command line and the module; it uses relative imports only):

- in the built or installed extension it is a real subfolder, ``CineScarLib/resultsdb/``,
  copied from ``stran/resultsdb`` by ``CineScar/CMakeLists.txt``; Python finds it as usual;
- in a checkout of the repository (the module folder added to Slicer's module paths) there is
  no such folder: the finder below loads ``<repository>/stran/resultsdb`` under the name
  ``CineScarLib.resultsdb``, on first import, not before.
"""

import sys
from importlib.util import spec_from_file_location
from pathlib import Path

__version__ = "0.1.0"

_RESULTSDB = __name__ + ".resultsdb"
_HERE = Path(__file__).resolve().parent
# <repository>/slicer_extension/CineScar/CineScarLib/__init__.py -> <repository>/stran/resultsdb
_SOURCE_RESULTSDB = _HERE.parent.parent.parent / "stran" / "resultsdb"


class _ResultsDBFromSourceTree:
    """Import hook for ``CineScarLib.resultsdb`` only, consulted after Python's own finders."""

    cinescar_resultsdb_finder = True  # marks instances, so that a reloaded package replaces its hook

    def __init__(self, source: Path) -> None:
        self.source = source

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _RESULTSDB:
            return None
        init = self.source / "__init__.py"
        if not init.is_file():
            raise ModuleNotFoundError(
                f"{_RESULTSDB} is missing: {_HERE / 'resultsdb'} does not exist (the built extension has it) "
                f"and neither does {self.source} (a checkout of the repository has it). Run the module from a "
                "full checkout, or build the extension with CMake, which copies stran/resultsdb into CineScarLib.",
                name=fullname,
            )
        return spec_from_file_location(fullname, init, submodule_search_locations=[str(self.source)])

    def invalidate_caches(self) -> None:
        pass


sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "cinescar_resultsdb_finder", False)]
if not (_HERE / "resultsdb" / "__init__.py").is_file():
    sys.meta_path.append(_ResultsDBFromSourceTree(_SOURCE_RESULTSDB))
