# Task data (prompt -> response splits) and preference pairs.


rule task_data:
    output:
        train=f"{RES}/data/task/train.jsonl",
        val=f"{RES}/data/task/val.jsonl",
        test=f"{RES}/data/task/test.jsonl",
        card=f"{OUT}/data/task_card.json",
    log:
        f"{LOG}/task_data.log",
    benchmark:
        f"{BENCH}/task_data.tsv"
    conda:
        CONDA_ENV
    params:
        fp=fingerprint("data"),
        out=parent("train", io="output"),
    shell:
        "{ENV} {PY} -m methods.cli data --config {CONFIG_FILE} --out {params.out} --card {output.card} > {log} 2>&1"


rule preference_data:
    output:
        train=f"{RES}/data/preferences/train.jsonl",
        test=f"{RES}/data/preferences/test.jsonl",
        card=f"{OUT}/data/preferences_card.json",
    log:
        f"{LOG}/preference_data.log",
    benchmark:
        f"{BENCH}/preference_data.tsv"
    conda:
        CONDA_ENV
    params:
        fp=fingerprint("preferences"),
        out=parent("train", io="output"),
    shell:
        "{ENV} {PY} -m methods.cli preferences --config {CONFIG_FILE} --out {params.out} --card {output.card} > {log} 2>&1"


rule contrast_data:
    """Pairs from conversational structure: the true reply vs another conversation's reply."""
    input:
        train=rules.task_data.output.train,
        val=rules.task_data.output.val,
    output:
        train=f"{RES}/data/contrast/train.jsonl",
        test=f"{RES}/data/contrast/test.jsonl",
        card=f"{OUT}/data/contrast_card.json",
    log:
        f"{LOG}/contrast_data.log",
    conda:
        CONDA_ENV
    params:
        fp=fingerprint("contrast", "data"),
        data=parent("train"),
        out=parent("train", io="output"),
    shell:
        "{ENV} {PY} -m methods.cli contrast --config {CONFIG_FILE} --data {params.data} --out {params.out} "
        "--card {output.card} > {log} 2>&1"
