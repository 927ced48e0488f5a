# Task data (prompt -> response splits) and preference pairs.


rule task_data:
    output:
        train=f"{RES}/data/task/train.jsonl",
        val=f"{RES}/data/task/val.jsonl",
        test=f"{RES}/data/task/test.jsonl",
        card=f"{OUT}/data/task_card.json",
    params:
        fp=fingerprint("data"),
        out=f"{RES}/data/task",
    log:
        f"{LOG}/task_data.log",
    benchmark:
        f"{BENCH}/task_data.tsv"
    shell:
        "{ENV} {PY} -m methods.cli data --config {CONFIG_FILE} --out {params.out} --card {output.card} > {log} 2>&1"


rule preference_data:
    output:
        train=f"{RES}/data/preferences/train.jsonl",
        test=f"{RES}/data/preferences/test.jsonl",
        card=f"{OUT}/data/preferences_card.json",
    params:
        fp=fingerprint("preferences"),
        out=f"{RES}/data/preferences",
    log:
        f"{LOG}/preference_data.log",
    benchmark:
        f"{BENCH}/preference_data.tsv"
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
    params:
        fp=fingerprint("contrast", "data"),
        data=f"{RES}/data/task",
        out=f"{RES}/data/contrast",
    log:
        f"{LOG}/contrast_data.log",
    shell:
        "{ENV} {PY} -m methods.cli contrast --config {CONFIG_FILE} --data {params.data} --out {params.out} "
        "--card {output.card} > {log} 2>&1"
