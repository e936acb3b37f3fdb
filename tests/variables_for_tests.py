"""Well-scaled random model variables from abstract shapes, without running
a model's init (which compiles the whole network): tests fill the tree that
`jax.eval_shape(model.init, ...)` describes."""

import zlib

import numpy as np
from flax import traverse_util


def random_variables(abstract, seed: int = 0):
    """{collection: tree} of float32 NumPy arrays shaped like `abstract`.

    Kernels are He-normal; BatchNorm statistics are away from the identity
    (means ~N(0, 0.1), variances in [0.5, 1.5]) so that a layer that drops
    or misplaces them gives different numbers.
    """
    out = {}
    for path, leaf in traverse_util.flatten_dict(dict(abstract)).items():
        rng = np.random.default_rng([zlib.crc32("/".join(path).encode()), seed])
        shape = tuple(leaf.shape)
        name = path[-1]
        if name == "var":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "scale":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "mean" or (name == "bias" and len(shape) == 1):
            value = rng.normal(0.0, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            value = rng.normal(0.0, 1.0, shape) * np.sqrt(2.0 / fan_in)
        out[path] = value.astype(np.float32)
    return traverse_util.unflatten_dict(out)
