"""process_results for the l3m task: the reference response's log-likelihood given its prompt,
counted in bytes so the number does not depend on the model's tokenizer."""


def process_results(doc, results):
    loglik, _ = results[0]
    n_bytes = len(doc["response"].encode("utf-8"))
    return {"bits_per_byte": (loglik, n_bytes), "nll_per_byte": (loglik, n_bytes)}


def nll_per_byte(items):
    """Nats per byte over the whole test set: sum of -loglik over sum of bytes."""
    lls, n_bytes = zip(*items)
    return -sum(lls) / sum(n_bytes)
