# One rule for every training method in methods/registry.py; a method starts from the model its
# registry entry names (the base model or another method's output).


def init_model(wildcards):
    return model_dir(METHODS[wildcards.method].init_from)


rule train:
    input:
        init=init_model,
        train=rules.task_data.output.train,
        val=rules.task_data.output.val,
    output:
        directory(model_dir("{method}")),
    wildcard_constraints:
        method="|".join(METHODS),
    params:
        fp=lambda w: fingerprint("data", w.method, "seed", "hardware"),
        data=f"{RES}/data/task",
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    log:
        f"{LOG}/train_{{method}}.log",
    benchmark:
        f"{BENCH}/train_{{method}}.tsv"
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m methods.cli train --config {CONFIG_FILE} --method {wildcards.method} "
        "--init {input.init} --data {params.data} --out {output} > {log} 2>&1"
