# Per model, one job: sampling on the test prompts, task perplexity, lengths and rewards; then the
# aggregate table. (`python -m evaluation.cli generate|perplexity|score` run the steps one at a time.)


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
    log:
        f"{LOG}/evaluate_{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        fp=fingerprint("generation", "evaluation", "rewards", "seed"),
        data=parent("test"),
        rewards=",".join(REWARDS),
        out=parent("perplexity", io="output"),
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
    log:
        f"{LOG}/lm_eval_{{model}}.log",
    benchmark:
        f"{BENCH}/lm_eval_{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        fp=fingerprint("evaluation", "seed"),
        data=parent("test"),
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli lm-eval --config {CONFIG_FILE} --model {input.model} "
        "--data {params.data} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        metrics=expand(
            f"{OUT}/metrics/{{model}}/{{metric}}.json",
            model=MODELS,
            metric=["perplexity", "lengths"]
            + [f"reward_{r}" for r in REWARDS]
            + (["lm_eval"] if CFG["evaluation"]["lm_eval"]["enabled"] else []),
        ),
    output:
        report(TABLE, category="Tables", caption="../report/metrics_table.rst"),
    log:
        f"{LOG}/aggregate.log",
    conda:
        CONDA_ENV
    params:
        metrics=parent("metrics", levels=2),
        models=",".join(MODELS),
    shell:
        "{ENV} {PY} -m evaluation.cli aggregate --config {CONFIG_FILE} --metrics {params.metrics} "
        "--models {params.models} --out {output} > {log} 2>&1"
