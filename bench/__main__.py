"""`python -m bench [runtime|control|identity|policy|cli|audit]`: run benchmarks, print their
tables."""

import sys

from bench import audit, cli, control, identity, policy, runtime

which = sys.argv[1:] or ["runtime", "control", "identity", "cli", "audit"]
status = 0
for name in which:
    print(f"\n== {name} ==", flush=True)
    status |= {
        "runtime": runtime.main,
        "control": control.main,
        "identity": identity.main,
        "policy": policy.main,
        "cli": cli.main,
        "audit": audit.main,
    }[name]()
sys.exit(status)
