"""Builds the optional C scanner; everything else is in pyproject.toml.

`optional=True`: without a compiler the install still succeeds and the parser
runs in pure Python (claude_usaged.fastpath reports which one is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "claude_usaged._fastscan",
            sources=["claude_usaged/_fastscan.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
