import sys

from bench.runtime import main

sys.exit(main())
