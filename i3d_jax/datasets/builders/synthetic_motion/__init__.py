"""TFDS builder `synthetic_motion`: its code and README.md (the description)."""
