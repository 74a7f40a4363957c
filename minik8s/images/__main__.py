"""``python -m minik8s.images seed --registry URL``: see :mod:`minik8s.images.base`."""

import sys

from minik8s.images.base import main

sys.exit(main())
