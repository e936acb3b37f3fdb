"""TFDS builder `kinetics`: its code, README.md (the description) and CITATIONS.bib."""
