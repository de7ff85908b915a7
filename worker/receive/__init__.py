"""Receiving studies over DICOM: the C-STORE service, its spool, and registering stable studies."""
