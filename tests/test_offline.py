"""Nothing reaches the network at run time (the machines these recipes run on are offline)."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

_PROBE = r"""
import socket
calls = []
def _refuse(*args, **kwargs):
    calls.append(args[:1])
    raise OSError("network access during import")
socket.getaddrinfo = _refuse
socket.create_connection = _refuse
socket.socket.connect = lambda self, *a: _refuse(*a)
import vision.data.augment  # imports albumentations, which asks PyPI for its latest version unless told not to
import vision.data.detection
print("calls", calls)
"""


def test_importing_the_augmentations_makes_no_network_call():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "calls []" in out.stdout, out.stdout + out.stderr
