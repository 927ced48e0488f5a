"""Training methods of l3m-bench: one module per method, the registry in methods.registry,
shared pieces in methods.core."""
