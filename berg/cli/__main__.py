"""``python -m berg.cli``: the ``berg`` command."""

import sys

from .parser import main

sys.exit(main())
