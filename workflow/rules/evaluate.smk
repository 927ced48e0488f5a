# Per model, one job: sampling on the test prompts, task perplexity, lengths and rewards; then the
# aggregate table. (`python -m evaluation.cli perplexity|score` and `methods.cli generate` run the
# steps one at a time.)


rule evaluate:
    input:
        model=model_dir("{model}"),
        test=rules.task_data.output.test,
        rm=reward_inputs(REWARDS),
    output:
        samples=f"{OUT}/samples/{{model}}.jsonl",
        run=f"{OUT}/samples/{{model}}.jsonl.run.json",
        perplexity=f"{OUT}/metrics/{{model}}/perplexity.json",
        lengths=f"{OUT}/metrics/{{model}}/lengths.json",
        rewards=[f"{OUT}/metrics/{{model}}/reward_{r}.json" for r in REWARDS],
    params:
        fp=fingerprint("generation", "evaluation", "rewards", "seed"),
        data=f"{RES}/data/task",
        rewards=",".join(REWARDS),
        out=f"{OUT}/metrics/{{model}}",
    threads: 1
    log:
        f"{LOG}/evaluate_{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_{{model}}.tsv"
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli evaluate --config {CONFIG_FILE} --model {input.model} "
        "--data {params.data} --rewards {params.rewards:q} --samples {output.samples} --out {params.out} > {log} 2>&1"


rule lm_eval:
    """lm-evaluation-harness: the local task on the test split (offline) and any configured hub tasks."""
    input:
        model=model_dir("{model}"),
        test=rules.task_data.output.test,
    output:
        f"{OUT}/metrics/{{model}}/lm_eval.json",
    params:
        fp=fingerprint("evaluation", "seed"),
        data=f"{RES}/data/task",
    threads: 1
    log:
        f"{LOG}/lm_eval_{{model}}.log",
    benchmark:
        f"{BENCH}/lm_eval_{{model}}.tsv"
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli lm-eval --config {CONFIG_FILE} --model {input.model} "
        "--data {params.data} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        expand(f"{OUT}/metrics/{{model}}/{{metric}}.json", model=MODELS,
               metric=["perplexity", "lengths"] + [f"reward_{r}" for r in REWARDS]
               + (["lm_eval"] if CFG["evaluation"]["lm_eval"]["enabled"] else [])),
    output:
        report(TABLE, category="Tables", caption="../report/metrics_table.rst"),
    params:
        metrics=f"{OUT}/metrics",
        models=",".join(MODELS),
    log:
        f"{LOG}/aggregate.log",
    shell:
        "{ENV} {PY} -m evaluation.cli aggregate --config {CONFIG_FILE} --metrics {params.metrics} "
        "--models {params.models} --out {output} > {log} 2>&1"
