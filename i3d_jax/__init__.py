"""i3d_jax: Quo Vadis (Carreira and Zisserman, 2017) in JAX/Flax."""
__version__ = "0.1.0"
