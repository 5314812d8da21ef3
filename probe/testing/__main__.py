"""``python -m probe.testing``: serve a simulated Flink cluster on a port."""

import sys

from probe.testing._flink import main

sys.exit(main())
