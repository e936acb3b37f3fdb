"""TensorFlow's environment, set by importing this before anything imports TF.

TF here only reads checkpoints and decodes, crops and flips frames on the
CPU. Its C++ INFO logs and the oneDNN notice it prints at import (before any
log level applies) are noise to a user: switch both off. oneDNN does not
speed up those image ops.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
