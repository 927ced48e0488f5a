# L3M ablations as a Snakemake Paramspace grid: `snakemake --cores all ablations`.
# One L3M per row of config.ablations.settings (each row: config.l3m and config.onpolicy with the row's keys changed)
# and per training seed, all on the band config.ablations.band, then sampled and scored on the test prompts.
from snakemake.utils import Paramspace

ABLATIONS = Paramspace(ablation_frame(), filename_params="*")
ABL_RES = f"{RES}/ablations"
ABL_OUT = f"{OUT}/ablations"


rule ablation_train:
    input:
        init=model_dir("base"),
        train=rules.task_data.output.train,
    output:
        directory(f"{ABL_RES}/seed{{seed}}/{ABLATIONS.wildcard_pattern}/model"),
    log:
        f"{LOG}/ablations/seed{{seed}}/{ABLATIONS.wildcard_pattern}/train.log",
    benchmark:
        f"{BENCH}/ablations/seed{{seed}}/{ABLATIONS.wildcard_pattern}.tsv"
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=TRAIN_MEM,
        runtime=TRAIN_TIME,
        gpu=GPUS,
    params:
        set=seed_set(ablation_set),
        data=parent("train"),
        fp=lambda w: train_fingerprint("l3m", {k: CFG["ablations"][k] for k in ("band", "reward")}, w.seed),  # + the row's path
    shell:
        "L3M_THREADS={threads} {ENV} {TRAIN_CLI} train --config {CONFIG_FILE} --method l3m "
        "--init {input.init} --data {params.data} --out {output} --set {params.set:q} > {log} 2>&1"


rule ablation_eval:
    input:
        model=rules.ablation_train.output,
        test=rules.task_data.output.test,
    output:
        samples=f"{ABL_OUT}/seed{{seed}}/{ABLATIONS.wildcard_pattern}/samples.jsonl",
        ppl=f"{ABL_OUT}/seed{{seed}}/{ABLATIONS.wildcard_pattern}/perplexity.json",
        lengths=f"{ABL_OUT}/seed{{seed}}/{ABLATIONS.wildcard_pattern}/lengths.json",
    log:
        f"{LOG}/ablations/seed{{seed}}/{ABLATIONS.wildcard_pattern}/eval.log",
    conda:
        CONDA_ENV
    threads: 1
    params:
        data=parent("test"),
        out=parent("ppl", io="output"),
        fp=seed_fingerprint("generation", "evaluation", "seed"),
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli evaluate --config {CONFIG_FILE} --seed {wildcards.seed} "
        "--model {input.model} "
        "--data {params.data} --rewards '' --samples {output.samples} --out {params.out} > {log} 2>&1"


rule ablation_table:
    input:
        lengths=expand(
            f"{ABL_OUT}/seed{{seed}}/{{params}}/lengths.json", seed=SEEDS, params=ABLATIONS.instance_patterns
        ),
        ppl=expand(f"{ABL_OUT}/seed{{seed}}/{{params}}/perplexity.json", seed=SEEDS, params=ABLATIONS.instance_patterns),
        models=expand(f"{ABL_RES}/seed{{seed}}/{{params}}/model", seed=SEEDS, params=ABLATIONS.instance_patterns),
    output:
        table=report(f"{OUT}/tables/ablations.csv", category="Ablations", caption="../report/ablations.rst"),
        per_seed=f"{OUT}/tables/ablations_per_seed.csv",
        png=report(f"{FIG}/ablations.png", category="Ablations", caption="../report/ablations.rst"),
        pdf=f"{FIG}/ablations.pdf",
    log:
        f"{LOG}/ablation_table.log",
    conda:
        CONDA_ENV
    params:
        results=parent("lengths", levels=3),
        models=parent("models", levels=3),
        patterns=",".join(ABLATIONS.instance_patterns),
        names=",".join(ABLATIONS.dataframe["name"]),
    shell:
        "{ENV} {PY} -m evaluation.cli ablations --config {CONFIG_FILE} --results {params.results} --models-dir {params.models} "
        "--patterns {params.patterns} --names {params.names} --table {output.table} --per-seed {output.per_seed} "
        "--out {output.png} > {log} 2>&1"


rule ablations:
    input:
        rules.ablation_table.output,
