import math

import torch

from evaluation.perplexity import response_nll, summarize_nll
from methods.core.models import encode_pair

ROWS = [{"prompt": "hey how are you?", "response": "good thanks, you?"},
        {"prompt": "what did you do today\ni went hiking", "response": "nice! where?"},
        {"prompt": "hi", "response": "hello there, nice to meet you"}]


def hand_nll(model, tok, prompt, response):
    """One example at a time, full logits, float64, explicit loop over the response tokens."""
    ids, start = encode_pair(tok, prompt, response)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = 0.0
    for t in range(start, len(ids)):
        row = logits[t - 1]
        total += -(row[ids[t]] - torch.logsumexp(row, 0)).item()
    return total / (len(ids) - start)


def test_response_nll_matches_hand_computation(micro_model, micro_tok):
    got = response_nll(micro_model, micro_tok, ROWS, batch_size=2, progress=False)  # batched, right-padded
    want = [hand_nll(micro_model, micro_tok, r["prompt"], r["response"]) for r in ROWS]
    assert len(got) == 3
    for g, w in zip(got, want):
        assert abs(g - w) < 1e-4
    # an untrained model is near-uniform: NLL close to log(vocab)
    assert abs(sum(got) / 3 - math.log(len(micro_tok))) < 1.0


def test_summary_closed_form():
    s = summarize_nll([1.0, 2.0, 3.0])
    assert s["nll_mean"] == 2.0 and abs(s["nll_std"] - 1.0) < 1e-12
    assert abs(s["perplexity"] - math.exp(2.0)) < 1e-9 and s["n"] == 3


def test_response_tokens_are_what_sft_trains_on(micro_tok):
    """encode_pair marks the same completion tokens as TRL's SFTTrainer tokenisation."""
    import datasets
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from methods.core.data import to_conversational

    rows = [dict(r, id=str(i)) for i, r in enumerate(ROWS)]
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(micro_tok), hidden_size=16, intermediate_size=16,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    args = SFTConfig(output_dir="/tmp/l3m-test-sft", use_cpu=True, report_to=[], completion_only_loss=True,
                     activation_checkpointing=False, max_length=128)
    trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(to_conversational(rows)),
                         processing_class=micro_tok)
    for ex, r in zip(trainer.train_dataset, rows):
        ids, start = encode_pair(micro_tok, r["prompt"], r["response"])
        assert ex["input_ids"] == ids
        assert ex["labels"] == [-100] * start + ids[start:]  # TRL's loss covers exactly our response tokens
    assert micro_tok.decode(ids[start:]) == r["response"] + "<|end|>"
