"""Builds the optional C scanner and aggregator; everything else is in pyproject.toml.

`optional=True`: without a compiler the install still succeeds and the parser and
the aggregates run in pure Python (claude_usaged.fastpath reports which parser is
in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            f"claude_usaged.{name}",
            sources=[f"claude_usaged/{name}.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        )
        for name in ("_fastscan", "_fastagg")
    ]
)
