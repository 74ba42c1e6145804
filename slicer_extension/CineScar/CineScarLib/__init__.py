"""CineScar's non-GUI library: NIfTI IO, the MONAI Label client, the review workflow and MRML building.

``nifti``, ``client``, ``jobs`` and ``session`` need only the standard library,
numpy and requests (they also run outside Slicer, e.g. in ``stran demo``);
``mrml`` needs ``slicer`` (Slicer, or the slicer-core wheel); ``resultsdb`` (a
link to the project's ``stran/resultsdb``) needs SQLAlchemy. Nothing is imported
here, so importing the package costs nothing and needs nothing.
"""

__version__ = "0.1.0"
