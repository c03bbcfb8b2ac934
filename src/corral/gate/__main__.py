"""`python -m corral.gate`: the operation catalogue as Markdown (docs/operations.md)."""

from corral.gate.operations import render_markdown

print(render_markdown(), end="")
