"""Pieces of the distributed path on 2 gloo processes (launched by tests/test_distributed.py under
torchrun): bucketed gradient averaging against the gradient of the whole batch on one process, and
FSDP sampling with layers gathered once against per-layer gathering and against one process."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def calls(counter, kind: str) -> int:
    """``all_reduce`` or ``all_gather`` calls a dist_bench ``Counter`` saw since its last ``take()``
    (FSDP2 all-gathers through all_gather_single)."""
    return sum(n for (_, fn), (n, _) in counter.counts.items() if fn.startswith(kind))


def main(model_dir, out):
    import torch
    import torch.distributed as dist

    from methods.core.distributed import GradReducer, init_distributed
    from methods.core.fsdp import gathered, shard
    from methods.core.generation import sample
    from methods.core.models import load_model

    world, rank, _ = init_distributed("cpu")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from dist_bench import Counter

    counter = Counter()  # wraps torch.distributed's collectives
    res = {"rank": rank}
    # 1. bucketed averaging: each process its half of a batch; the reference: the whole batch on this process
    model, tok = load_model(model_dir, for_training=True)
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    x = torch.randint(3, 500, (4, 9))

    def loss_of(rows):
        return model(input_ids=rows, labels=rows).loss

    loss_of(x).backward()  # the mean over both halves' (equal-length) rows: what averaging must give
    full = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    reducer = GradReducer(params, world, bucket_mb=0.004)  # small buckets: several per backward
    before = calls(counter, "all_reduce")
    loss_of(x[rank * 2:(rank + 1) * 2]).backward()
    res["launched_during_backward"] = calls(counter, "all_reduce") - before
    reducer.wait()
    res["buckets"] = len(reducer.buckets)
    res["all_reduces"] = calls(counter, "all_reduce") - before
    res["grad_max_abs_err"] = max((p.grad - g).abs().max().item() for p, g in zip(params, full))
    res["grad_max_abs"] = max(g.abs().max().item() for g in full)
    # 2. FSDP sampling: per-layer gathering, gathered once, and one process on the whole batch
    gen = dict(max_new_tokens=12, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, batch_size=4)
    prompts = ["hi", "how was your weekend?", "tell me about your dog", "ok"]
    one = sample(load_model(model_dir)[0], tok, prompts, gen, seed=5, progress=False)
    sharded = load_model(model_dir)[0]
    shard(sharded, {"device": "cpu"})
    mine = prompts[rank * 2:(rank + 1) * 2]
    for mode in ("per_layer", "gather"):
        counter.take()
        if mode == "gather":
            with gathered(sharded):
                got = sample(sharded, tok, mine, dict(gen, batch_size=2), seed=5, progress=False, rows=(rank * 2, 4))
        else:
            got = sample(sharded, tok, mine, dict(gen, batch_size=2), seed=5, progress=False, rows=(rank * 2, 4))
        res[mode] = {"tokens": [g["response_ids"] for g in got], "all_gathers": calls(counter, "all_gather"),
                     "all_reduces": calls(counter, "all_reduce"), "n_tokens": max(g["n_tokens"] for g in got)}
    res["one"] = [g["response_ids"] for g in one[rank * 2:(rank + 1) * 2]]
    res["layers"] = len(sharded.get_decoder().layers)
    # after the block the layers are sharded again: a forward gathers each once more
    counter.take()
    with torch.no_grad():
        sharded(input_ids=x[:1])
    res["gathers_after"] = calls(counter, "all_gather")
    Path(f"{out}.rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
