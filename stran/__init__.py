"""ST-RAN Scar: contrast-free myocardial scar detection from short-axis cine MRI."""

__version__ = "0.1.0"
