"""Auditability (a pillar, empty for now): the tamper-evident record of every operation.

What will live here: the hash-linked Merkle log that every Gate call is appended to (in the same
transaction as the change it records), signed checkpoints, inclusion and consistency proofs,
tiles, exporters and session recordings. Today it holds only `NoRecord`, the Gate's no-op
`Recorder`; the audit issue replaces it without touching any adapter.
"""

from corral.audit._recorder import NoRecord

__all__ = ["NoRecord"]
