"""TFDS builder `ucf101`: its code, README.md (the description) and CITATIONS.bib."""
