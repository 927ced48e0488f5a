"""lm-evaluation-harness on one model: the local task on the held-out task data (offline), plus any
named lm-eval tasks from config (``evaluation.lm_eval.tasks``, for users with a hub).

The local task ``l3m_task`` (task config written next to a copy of evaluation/lm_eval_tasks/utils.py
at run time, because its data path is per run) scores each test pair as a loglikelihood request:
the chat-formatted prompt (lm-eval's ``apply_chat_template``, the model's own template) as context
and the reference response as continuation. Metrics: ``bits_per_byte`` and ``nll_per_byte``
(nats per UTF-8 byte of the response), aggregated as sum(-loglik) / sum(bytes): independent of the
tokenizer, so models with different vocabularies compare. Test pairs whose response alone is longer
than the model's context are left out (counted in ``l3m_task_pairs``).
"""
from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

TASK = "l3m_task"
HERE = Path(__file__).resolve().parent / "lm_eval_tasks"


def _task_yaml(test_file: Path) -> str:
    return f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test_file}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{response}}}}"
target_delimiter: ""
process_results: !function utils.process_results
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
  - metric: nll_per_byte
    aggregation: !function utils.nll_per_byte
    higher_is_better: false
metadata:
  version: 1.0
"""


def run_lm_eval(model_dir: str, test_file: str, extra_tasks: list[str], batch_size: int, device: str,
                limit: int | None = None) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from methods.core.io import read_jsonl, write_jsonl
    from methods.core.models import load_tokenizer

    # lm-eval truncates the context from the left but refuses a continuation longer than the model's
    # context: such pairs are left out of the local task and counted
    tok = load_tokenizer(model_dir)
    from transformers import AutoConfig

    ctx = int(getattr(AutoConfig.from_pretrained(str(model_dir)), "max_position_embeddings", 2048) or 2048)
    rows = read_jsonl(test_file)
    kept = [r for r in rows if len(tok(r["response"], add_special_tokens=False)["input_ids"]) < ctx]
    work = Path(tempfile.mkdtemp(prefix="l3m_lm_eval."))
    try:
        shutil.copy(HERE / "utils.py", work / "utils.py")
        write_jsonl(work / "test.jsonl", kept)
        (work / f"{TASK}.yaml").write_text(_task_yaml(work / "test.jsonl"))
        res = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"}, tasks=[TASK, *extra_tasks],
            # lm-eval's own task index takes about 10 s to build: only when named tasks need it
            task_manager=TaskManager(include_path=str(work), include_defaults=bool(extra_tasks)),
            batch_size=batch_size, device=device, apply_chat_template=True, limit=limit, log_samples=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {t: {k: v for k, v in r.items() if isinstance(v, (int, float, str)) and (not isinstance(v, float)
                                                                               or math.isfinite(v))}
           for t, r in res["results"].items()}
    return {"results": out, "l3m_task_pairs": {"test": len(rows), "scored": len(kept),
                                                "left_out_longer_than_context": len(rows) - len(kept)},
            "versions": {k: str(v) for k, v in res.get("versions", {}).items()},
            "n_samples": {k: v for k, v in res.get("n-samples", {}).items()}}
