"""The `ray` logger: warnings of the package go to stderr in Ray's layout
("2026-01-01 12:00:00,000\tWARNING exceptions.py:12 -- message"), unless the
application configured the logger itself."""

import logging
import sys

FORMAT = "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"


def _setup():
    logger = logging.getLogger("ray")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


_setup()
