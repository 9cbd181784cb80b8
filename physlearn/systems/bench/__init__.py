"""The bench system (levels 2–4): a `BenchSystem` composed of small collaborators."""
