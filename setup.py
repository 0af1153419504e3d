"""Builds the optional C scanner, batch helpers and aggregator; the rest is in pyproject.toml.

`optional=True`: without a compiler the install still succeeds, and the parser, the
batches and the aggregates run in pure Python (claude_usaged.fastpath reports which
parser is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            f"claude_usaged.{name}",
            sources=[f"claude_usaged/{name}.c"],
            depends=["claude_usaged/_records.h"],
            # no fused multiply-add: costs and sums must round as Python rounds them
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-ffp-contract=off"],
            optional=True,
        )
        for name in ("_fastscan", "_fastbatch", "_fastagg")
    ]
)
