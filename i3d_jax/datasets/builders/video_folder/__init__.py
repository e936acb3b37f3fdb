"""TFDS builder `video_folder`: your own labelled clips, from a folder or list files."""
