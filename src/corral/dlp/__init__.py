"""Data governance (a pillar, empty for now): what data may cross which boundary.

What will live here: sensitive information types, DLP policies, redaction (pure functions) and
secrets. The Gate's inspect stages are where it plugs in: `inspect_in` sees an operation's
arguments before it acts (typed text, written files, the clipboard, URLs), `inspect_out` its
result before the caller does (screenshots, read files, command output). Today it holds only
the no-op inspectors; the DLP issue replaces them without touching any adapter.
"""

from corral.dlp._inspect import PassInput, PassOutput

__all__ = ["PassInput", "PassOutput"]
