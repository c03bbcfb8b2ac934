"""Threat detection (a pillar, empty for now): events from PCs and the Gate, rules, responses.

What will live here: event intake (the Gate's record stage and the PCs' sensors), Sigma rules,
responses (raise an agent's risk, revoke its tokens, freeze its PC, cut its network) and
hunting. It will read the Gate's calls as a `corral.gate.Recorder` chained after the audit log,
so adapters never change for it.
"""

__all__: list[str] = []
