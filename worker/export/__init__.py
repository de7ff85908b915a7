"""Sending results back as DICOM: a TID 1500 SR (and heatmap Secondary Captures) per screened
study, to PACS (C-STORE), DICOMweb (STOW-RS) or a folder."""
