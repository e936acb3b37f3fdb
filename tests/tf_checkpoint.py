"""Writing real TensorFlow checkpoints with chosen variable names, for converter tests."""


def write_tf_checkpoint(prefix, arrays) -> str:
    """A TF checkpoint at `prefix` holding exactly `arrays` ({name: array}); returns the prefix."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    names = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[arrays[n] for n in names],
    )
    return str(prefix)
