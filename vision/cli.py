"""Shared behaviour of the entry points: bad input ends with one clear line on stderr, exit code 2."""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from vision.errors import VisionError


def guarded(fn: Callable[..., Any], *args: Any, name: str = "vision") -> Any:
    from hydra.errors import InstantiationException

    try:
        return fn(*args)
    except (VisionError, InstantiationException) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) else e
        if not isinstance(cause, VisionError):  # a bug or an unexpected failure: the full traceback
            raise
        logging.getLogger(name).debug("failed", exc_info=True)
        print(f"error: {type(cause).__name__}: {cause}", file=sys.stderr, flush=True)
        sys.exit(2)
