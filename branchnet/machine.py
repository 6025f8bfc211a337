"""What this machine has to offer: free memory (steps check it before they allocate)."""

from __future__ import annotations

import os


def available_ram() -> int:
    """Available RAM in bytes (``MemAvailable`` in /proc/meminfo, else a portable estimate)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30
