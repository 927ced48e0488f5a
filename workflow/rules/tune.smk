# The validation sweep (`snakemake --cores all tune`): one Paramspace grid of (variant, setting) rows from
# config.tune.grid (methods/registry.py `tune_rows`), each trained per tuning seed with its variant's overrides
# and the setting's keys, sampled and scored on the val prompts; then the sweep's table and the setting chosen
# per constraint point and method by the declared rule (met on val, then the lowest val task NLL; none met: the
# closest to meeting it); then only the
# chosen models are sampled and scored on the test prompts (tune_table is a checkpoint) and compared, paired.
from snakemake.utils import Paramspace

TUNE = Paramspace(tune_frame(TUNE_ROWS), filename_params="*")
TUNE_RES = f"{RES}/tune"
TUNE_OUT = f"{OUT}/tune"
TUNE_SEEDS = CFG["tune"]["seeds"]
TUNE_REWARDS = TWO["rewards"]


rule tune_train:
    input:
        init=lambda w: model_dir(METHODS[tune_row(w)["method"]].init_from, w.seed),
        train=rules.task_data.output.train,
        extra=lambda w: method_inputs(tune_row(w)["method"], tune_row(w)["overrides"]),
    output:
        directory(f"{TUNE_RES}/seed{{seed}}/{TUNE.wildcard_pattern}/model"),
    log:
        f"{LOG}/tune/seed{{seed}}/{TUNE.wildcard_pattern}/train.log",
    benchmark:
        f"{BENCH}/tune/seed{{seed}}/{TUNE.wildcard_pattern}.tsv"
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=TRAIN_MEM,
        runtime=TRAIN_TIME,
        gpu=GPUS,
    params:
        fp=lambda w: train_fingerprint(tune_row(w)["method"], tune_row(w)["overrides"], w.seed),
        data=parent("train"),
        method=lambda w: tune_row(w)["method"],
        set=seed_set(lambda w: tune_row(w)["overrides"]),
    shell:
        "L3M_THREADS={threads} {ENV} {TRAIN_CLI} train --config {CONFIG_FILE} --method {params.method} "
        "--init {input.init} --data {params.data} --out {output} --set {params.set:q} > {log} 2>&1"


rule tune_eval:
    input:
        model=rules.tune_train.output,
        val=rules.task_data.output.val,
        rm=reward_inputs(TUNE_REWARDS),
    output:
        samples=f"{TUNE_OUT}/seed{{seed}}/samples/{TUNE.wildcard_pattern}.jsonl",
        perplexity=f"{TUNE_OUT}/seed{{seed}}/metrics/{TUNE.wildcard_pattern}/perplexity.json",
        rewards=[f"{TUNE_OUT}/seed{{seed}}/metrics/{TUNE.wildcard_pattern}/reward_{r}.json" for r in TUNE_REWARDS],
    log:
        f"{LOG}/tune/seed{{seed}}/{TUNE.wildcard_pattern}/eval.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        split="val",
        data=parent("val"),
        out=parent("perplexity", io="output"),
        rewards=",".join(TUNE_REWARDS),
        fp=seed_fingerprint("generation", "evaluation", "rewards", "seed"),
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli evaluate --config {CONFIG_FILE} --seed {wildcards.seed} "
        "--split {params.split} --model {input.model} --data {params.data} --rewards {params.rewards:q} "
        "--samples {output.samples} --out {params.out} > {log} 2>&1"


# the same models on the test prompts; only the chosen ones are asked for (tune_test_table)
use rule tune_eval as tune_eval_test with:
    input:
        model=rules.tune_train.output,
        test=rules.task_data.output.test,
        rm=reward_inputs(TUNE_REWARDS),
    output:
        samples=f"{TUNE_OUT}/test/seed{{seed}}/samples/{TUNE.wildcard_pattern}.jsonl",
        perplexity=f"{TUNE_OUT}/test/seed{{seed}}/metrics/{TUNE.wildcard_pattern}/perplexity.json",
        rewards=[f"{TUNE_OUT}/test/seed{{seed}}/metrics/{TUNE.wildcard_pattern}/reward_{r}.json" for r in TUNE_REWARDS],
    log:
        f"{LOG}/tune/test/seed{{seed}}/{TUNE.wildcard_pattern}/eval.log",
    params:
        split="test",
        data=parent("test"),
        out=parent("perplexity", io="output"),
        rewards=",".join(TUNE_REWARDS),
        fp=seed_fingerprint("generation", "evaluation", "rewards", "seed"),


checkpoint tune_table:
    input:
        metrics=expand(
            f"{TUNE_OUT}/seed{{seed}}/metrics/{{params}}/{{m}}.json",
            seed=TUNE_SEEDS,
            params=TUNE.instance_patterns,
            m=["perplexity"] + [f"reward_{r}" for r in TUNE_REWARDS],
        ),
    output:
        table=report(f"{OUT}/tables/tuning.csv", category="Tuning", caption="../report/tuning.rst"),
        choice=report(f"{OUT}/tables/tuning_choice.csv", category="Tuning", caption="../report/tuning.rst"),
    log:
        f"{LOG}/tune_table.log",
    conda:
        CONDA_ENV
    params:
        results=parent("metrics", levels=4),
    shell:
        "{ENV} {PY} -m evaluation.cli tune-table --config {CONFIG_FILE} --results {params.results} "
        "--table {output.table} --choice {output.choice} > {log} 2>&1"


rule tune_test_table:
    input:
        sweep=f"{OUT}/tables/tuning.csv",
        choice=f"{OUT}/tables/tuning_choice.csv",
        metrics=tune_test_inputs,
    output:
        table=report(f"{OUT}/tables/tuning_test.csv", category="Tuning", caption="../report/tuning.rst"),
        comparisons=report(f"{OUT}/tables/tuning_comparisons.csv", category="Tuning", caption="../report/tuning.rst"),
        png=report(f"{FIG}/tuning.png", category="Tuning", caption="../report/tuning.rst"),
        pdf=f"{FIG}/tuning.pdf",
    log:
        f"{LOG}/tune_test_table.log",
    conda:
        CONDA_ENV
    params:
        results=f"{TUNE_OUT}/test",
    shell:
        "{ENV} {PY} -m evaluation.cli tune-test --config {CONFIG_FILE} --results {params.results} "
        "--sweep {input.sweep} --choice {input.choice} --table {output.table} --comparisons {output.comparisons} "
        "--out {output.png} > {log} 2>&1"


rule tune:
    input:
        rules.tune_table.output,
        rules.tune_test_table.output,
