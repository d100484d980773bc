"""Setuptools shim; metadata lives in pyproject.toml.

The C++/CUDA extension is JIT-compiled on first use (see rstfast/csrc), so nothing is built here.
"""
from setuptools import setup

setup()
