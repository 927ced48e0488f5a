"""Evaluation of l3m-bench models: task perplexity, response lengths, rewards, tables, figures."""
