"""Reading an adapter's [options]: typed readers whose errors name the table and the key.
Pure: adapters read their options here when they are built, before any I/O starts.
"""

from __future__ import annotations


class AdapterConfigError(ValueError):
    """An adapter's configuration is unusable (its file, or its [options] when the adapter is
    built); the message names the file or key."""
