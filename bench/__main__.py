"""`python -m bench [runtime|control|identity|policy|cli]`: run benchmarks, print their tables."""

import sys

from bench import cli, control, identity, policy, runtime

which = sys.argv[1:] or ["runtime", "control", "identity", "cli"]
status = 0
for name in which:
    print(f"\n== {name} ==", flush=True)
    status |= {
        "runtime": runtime.main,
        "control": control.main,
        "identity": identity.main,
        "policy": policy.main,
        "cli": cli.main,
    }[name]()
sys.exit(status)
