"""Isolation and overload benchmark for worker pools (issue #4): see ``esl_app/pools/bench.py``.

python bench/isolation.py            # both pools share the machine's CPUs
python bench/isolation.py --pin      # inbound pool on CPU 0, outbound pool and its flood on CPU 1
python bench/isolation.py --dialer --pin   # the flood is the real dialer (esl_app/pools/bench_dialer.py)
"""

import sys

from esl_app.pools.bench import main

if __name__ == "__main__":
    sys.exit(main())
