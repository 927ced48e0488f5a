"""Shared pieces every method uses: config, data, models, generation, rewards, records."""
