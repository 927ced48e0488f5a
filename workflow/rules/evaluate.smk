# Per model and seed, one job: sampling on the test prompts (with the seed), task perplexity, lengths and
# rewards; then the aggregate table over the seeds. The mixture models are also sampled on the val prompts
# (evaluate_val: the comparisons choose among them there). (`python -m evaluation.cli generate|perplexity|score` run the steps one at a time.)


rule evaluate:
    input:
        model=lambda w: model_dir(w.model, w.seed),
        test=rules.task_data.output.test,
        rm=reward_inputs(REWARDS),
    output:
        samples=f"{seed_out()}/samples/{{model}}.jsonl",
        run=f"{seed_out()}/samples/{{model}}.jsonl.run.json",
        perplexity=f"{seed_out()}/metrics/{{model}}/perplexity.json",
        lengths=f"{seed_out()}/metrics/{{model}}/lengths.json",
        rewards=[f"{seed_out()}/metrics/{{model}}/reward_{r}.json" for r in REWARDS],
    log:
        f"{LOG}/seed{{seed}}/evaluate_{{model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/evaluate_{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        fp=seed_fingerprint("generation", "evaluation", "rewards", "seed"),
        data=parent("test"),
        rewards=",".join(REWARDS),
        out=parent("perplexity", io="output"),
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli evaluate --config {CONFIG_FILE} --seed {wildcards.seed} "
        "--model {input.model} --data {params.data} --rewards {params.rewards:q} --samples {output.samples} --out {params.out} > {log} 2>&1"


rule evaluate_val:
    """A weight-grid model (mix<j>) on the val prompts, scored on the two constrained rewards: the
    comparisons choose the mixture model nearest each constraint point from these, so that the choice
    does not see the test prompts it is reported on."""
    input:
        model=lambda w: model_dir(w.model, w.seed),
        val=rules.task_data.output.val,
        rm=reward_inputs(TWO["rewards"]),
    output:
        samples=f"{OUT}/val/seed{{seed}}/samples/{{model}}.jsonl",
        run=f"{OUT}/val/seed{{seed}}/samples/{{model}}.jsonl.run.json",
        perplexity=f"{OUT}/val/seed{{seed}}/metrics/{{model}}/perplexity.json",
        lengths=f"{OUT}/val/seed{{seed}}/metrics/{{model}}/lengths.json",
        rewards=[f"{OUT}/val/seed{{seed}}/metrics/{{model}}/reward_{r}.json" for r in TWO["rewards"]],
    log:
        f"{LOG}/val/seed{{seed}}/evaluate_{{model}}.log",
    benchmark:
        f"{BENCH}/val/seed{{seed}}/evaluate_{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        fp=seed_fingerprint("generation", "evaluation", "rewards", "seed"),
        data=parent("val"),
        rewards=",".join(TWO["rewards"]),
        out=parent("perplexity", io="output"),
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli evaluate --config {CONFIG_FILE} --seed {wildcards.seed} "
        "--split val --model {input.model} --data {params.data} --rewards {params.rewards:q} "
        "--samples {output.samples} --out {params.out} > {log} 2>&1"


rule lm_eval:
    """lm-evaluation-harness: the local task on the test split (offline) and any configured hub tasks."""
    input:
        model=lambda w: model_dir(w.model, w.seed),
        test=rules.task_data.output.test,
    output:
        f"{seed_out()}/metrics/{{model}}/lm_eval.json",
    log:
        f"{LOG}/seed{{seed}}/lm_eval_{{model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/lm_eval_{{model}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        fp=seed_fingerprint("evaluation", "seed"),
        data=parent("test"),
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli lm-eval --config {CONFIG_FILE} --seed {wildcards.seed} --model {input.model} "
        "--data {params.data} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        metrics=expand(
            f"{OUT}/seed{{seed}}/metrics/{{model}}/{{metric}}.json",
            seed=SEEDS,
            model=MODELS,
            metric=["perplexity", "lengths"]
            + [f"reward_{r}" for r in REWARDS]
            + (["lm_eval"] if CFG["evaluation"]["lm_eval"]["enabled"] else []),
        ),
    output:
        table=report(TABLE, category="Tables", caption="../report/metrics_table.rst"),
        per_seed=f"{OUT}/tables/metrics_per_seed.csv",
    log:
        f"{LOG}/aggregate.log",
    conda:
        CONDA_ENV
    params:
        results=parent("metrics", levels=4),
        models=",".join(MODELS),
    shell:
        "{ENV} {PY} -m evaluation.cli aggregate --config {CONFIG_FILE} --results {params.results} "
        "--models {params.models} --out {output.table} --per-seed {output.per_seed} > {log} 2>&1"
