"""`suite ARGS` without `suite doctor`'s refusal of a backend it found not exact on this host, so
that check.sh can still report what `suite verify` measures there (bit_exact, max_ulp, the first
node where tiles and whole map part ways). Everything else is the CLI's own code.

usage (under emulation): run.sh python hardware/aarch64/ungated.py verify --model ... --backend B
"""

import sys

from suite import doctor
from suite.cli import main

doctor.require_exact = lambda backend, say=None: None
sys.exit(main(sys.argv[1:]))
