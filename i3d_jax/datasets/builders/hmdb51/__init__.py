"""TFDS builder `hmdb51`: its code, README.md (the description) and CITATIONS.bib."""
