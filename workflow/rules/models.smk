# The base ("initialisation") model as an HF folder: pre-trained here, de-quantised from a GGUF
# shipped on PyPI, or taken from the hub (config base_model.source).


rule base_model:
    input:
        train=rules.task_data.output.train,
    output:
        directory(model_dir("base")),
    log:
        f"{LOG}/base_model.log",
    benchmark:
        f"{BENCH}/base_model.tsv"
    conda:
        CONDA_ENV
    threads: max(TRAIN_THREADS, 2)  # nothing else can run while the base trains (capped at --cores)
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        fp=fingerprint("data", "base_model", "seed"),
        data=parent("train"),
    shell:
        "L3M_THREADS={threads} {ENV} {PY} -m methods.cli base --config {CONFIG_FILE} --data {params.data} "
        "--out {output} > {log} 2>&1"
