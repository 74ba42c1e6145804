"""The MONAI Label app's adapters over the ``stran`` package (MONAI Label requires this package to be named ``lib``)."""
