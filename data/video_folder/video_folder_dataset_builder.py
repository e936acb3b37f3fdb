"""`tfds build data/video_folder` from a checkout: the builder is
i3d_jax.datasets.builders.video_folder (an installed i3d_jax builds it by name:
`python -m i3d_jax.datasets.build video_folder --manual_dir=DIR ...`)."""
from i3d_jax.datasets.builders.video_folder import video_folder_dataset_builder as _package


class Builder(_package.Builder):
    __doc__ = _package.Builder.__doc__
    pkg_dir_path = _package.Builder.pkg_dir_path  # README.md
