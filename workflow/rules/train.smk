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
        fp=lambda w: fingerprint("data", w.method, "seed", "hardware", "constraints", "rewards"),
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


rule train_l3m_length:
    """Figure 2: one L3M per length band of experiments.length.bands, from the base model."""
    input:
        init=model_dir("base"),
        train=rules.task_data.output.train,
    output:
        directory(model_dir("l3m_len{band}")),
    wildcard_constraints:
        band="[0-9]+",
    params:
        fp=lambda w: fingerprint("data", "l3m", "seed", "hardware", "rewards") + str(LENGTH["bands"][int(w.band)]),
        data=f"{RES}/data/task",
        set=lambda w: json.dumps({"constraints": [{"reward": LENGTH["reward"], "band": LENGTH["bands"][int(w.band)]}]}),
    threads: TRAIN_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
    log:
        f"{LOG}/train_l3m_len{{band}}.log",
    benchmark:
        f"{BENCH}/train_l3m_len{{band}}.tsv"
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m methods.cli train --config {CONFIG_FILE} --method l3m "
        "--init {input.init} --data {params.data} --out {output} --set {params.set:q} > {log} 2>&1"
