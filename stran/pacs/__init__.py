"""PACS: cine studies from a DICOMweb server and detection results back to it as DICOM."""
