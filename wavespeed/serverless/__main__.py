"""``python -m wavespeed.serverless --help``: the flags ``start()`` reads."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
