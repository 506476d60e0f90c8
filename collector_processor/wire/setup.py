"""Builds ``jobtrail._otlp_wire``, the processor's optional C scanner (see pyproject.toml beside this file)."""

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("jobtrail._otlp_wire", ["otlp_wire.c"], extra_compile_args=["-O2", "-std=c11"])],
    packages=[],
)
