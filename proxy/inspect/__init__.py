"""The traffic inspector: per-request captures (``capture``), the shared ring (``ring``), HAR (``har``)."""
