"""The experiment configs, installed as the package `i3d_jax.experiments`: one
`get_config(arg)` a file (`--config NAME[:ARG]` finds them by name)."""
