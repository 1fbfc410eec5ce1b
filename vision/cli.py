"""Shared behaviour of the entry points: bad input ends with one clear line on stderr, exit code 2."""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from vision.errors import VisionError


def guarded(fn: Callable[..., Any], *args: Any, name: str = "vision") -> Any:
    try:
        return fn(*args)
    except VisionError as e:
        logging.getLogger(name).debug("failed", exc_info=True)
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
