"""`python -m bench [runtime|control|identity]`: run the benchmarks and print their tables."""

import sys

from bench import control, identity, runtime

which = sys.argv[1:] or ["runtime", "control", "identity"]
status = 0
for name in which:
    print(f"\n== {name} ==", flush=True)
    status |= {"runtime": runtime.main, "control": control.main, "identity": identity.main}[name]()
sys.exit(status)
