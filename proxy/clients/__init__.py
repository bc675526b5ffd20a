"""Who is calling: client keys, per-client limits and budgets, usage and cost (pure data in ``model``)."""
