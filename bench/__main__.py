"""`python -m bench [runtime|control]`: run the benchmarks and print their tables."""

import sys

from bench import control, runtime

which = sys.argv[1:] or ["runtime", "control"]
status = 0
for name in which:
    print(f"\n== {name} ==", flush=True)
    status |= {"runtime": runtime.main, "control": control.main}[name]()
sys.exit(status)
