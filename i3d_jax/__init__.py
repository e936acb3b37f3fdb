"""i3d_jax: Quo Vadis (Carreira and Zisserman, 2017) in JAX/Flax."""
__version__ = "0.1.0"

# Before anything starts JAX's backend: XLA:CPU's flags, the same for the
# `i3d-jax` program and for a script or notebook (i3d_jax/kernels/xla_flags.py).
from i3d_jax.kernels import xla_flags as _xla_flags  # noqa: E402

_xla_flags.add_cpu_flags()
