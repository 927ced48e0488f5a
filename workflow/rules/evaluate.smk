# Sampling on the test prompts, task perplexity, lengths, rewards, and the aggregate table.


rule generate:
    input:
        model=model_dir("{model}"),
        test=rules.task_data.output.test,
    output:
        samples=f"{OUT}/samples/{{model}}.jsonl",
        run=f"{OUT}/samples/{{model}}.jsonl.run.json",
    params:
        fp=fingerprint("generation", "seed"),
        data=f"{RES}/data/task",
    threads: 1
    log:
        f"{LOG}/generate_{{model}}.log",
    benchmark:
        f"{BENCH}/generate_{{model}}.tsv"
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m methods.cli generate --config {CONFIG_FILE} --model {input.model} "
        "--data {params.data} --out {output.samples} > {log} 2>&1"


rule perplexity:
    input:
        model=model_dir("{model}"),
        test=rules.task_data.output.test,
    output:
        f"{OUT}/metrics/{{model}}/perplexity.json",
    params:
        fp=fingerprint("evaluation"),
        data=f"{RES}/data/task",
    threads: 1
    log:
        f"{LOG}/perplexity_{{model}}.log",
    benchmark:
        f"{BENCH}/perplexity_{{model}}.tsv"
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli perplexity --config {CONFIG_FILE} --model {input.model} "
        "--data {params.data} --out {output} > {log} 2>&1"


rule lengths:
    input:
        rules.generate.output.samples,
    output:
        f"{OUT}/metrics/{{model}}/lengths.json",
    log:
        f"{LOG}/lengths_{{model}}.log",
    shell:
        "{ENV} {PY} -m evaluation.cli lengths --config {CONFIG_FILE} --samples {input} --out {output} > {log} 2>&1"


rule reward:
    input:
        samples=rules.generate.output.samples,
        model=model_dir("{model}"),
    output:
        f"{OUT}/metrics/{{model}}/reward_{{reward}}.json",
    params:
        fp=fingerprint("rewards"),
    threads: 1
    log:
        f"{LOG}/reward_{{reward}}_{{model}}.log",
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli reward --config {CONFIG_FILE} --name {wildcards.reward} "
        "--samples {input.samples} --model {input.model} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        expand(f"{OUT}/metrics/{{model}}/{{metric}}.json", model=MODELS,
               metric=["perplexity", "lengths"] + [f"reward_{r}" for r in REWARDS]),
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
