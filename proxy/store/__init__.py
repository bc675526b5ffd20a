"""All SQL of keyrelay: the ``KeyStore`` interface (``base``), its portable row operations (``tx``,
``keys``, ``audit``) and the SQLite backend (``sqlite``, ``db``: connection, PRAGMAs, migrations)."""
