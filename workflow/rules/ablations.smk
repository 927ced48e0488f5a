# L3M ablations as a Snakemake Paramspace grid: `snakemake --cores all ablations`.
# One L3M per row of config.ablations.settings (each row: config.l3m with the row's keys changed),
# all on the band config.ablations.band, then sampled and scored on the test prompts.
import pandas as pd
from snakemake.utils import Paramspace

ABL_KEYS = ["mu0", "mu_min", "mu_decay", "relax", "ema", "clip", "length_normalize", "pg_estimator", "baseline"]


def _ablation_frame():
    rows = []
    for st in CFG["ablations"]["settings"]:
        full = {k: st.get(k, CFG["l3m"][k]) for k in ABL_KEYS}
        full["relax"] = "mu2" if full["relax"] is None else full["relax"]
        rows.append({"name": st["name"], **full})
    return pd.DataFrame(rows, columns=["name"] + ABL_KEYS)


ABLATIONS = Paramspace(_ablation_frame(), filename_params="*")
ABL_RES = f"{RES}/ablations"
ABL_OUT = f"{OUT}/ablations"


def ablation_set(wildcards):
    inst = ABLATIONS.instance(wildcards)
    l3m = {k: inst[k] for k in ABL_KEYS}
    l3m["relax"] = None if str(l3m["relax"]) == "mu2" else float(l3m["relax"])
    l3m["length_normalize"] = str(l3m["length_normalize"]) == "True"
    for k in ("mu0", "mu_min", "ema"):
        l3m[k] = float(l3m[k])
    l3m["mu_decay"] = "auto" if str(l3m["mu_decay"]) == "auto" else float(l3m["mu_decay"])
    cons = [{"reward": CFG["ablations"]["reward"], "band": CFG["ablations"]["band"]}]
    return json.dumps({"l3m": l3m, "constraints": cons})


rule ablation_train:
    input:
        init=model_dir("base"),
        train=rules.task_data.output.train,
    output:
        directory(f"{ABL_RES}/{ABLATIONS.wildcard_pattern}/model"),
    params:
        set=ablation_set,
        data=f"{RES}/data/task",
        fp=train_fingerprint("l3m", {k: CFG["ablations"][k] for k in ("band", "reward")}),  # the row: in the path
    threads: TRAIN_THREADS
    resources:
        mem_mb=TRAIN_MEM,
        runtime=TRAIN_TIME,
        gpu=GPUS,
    log:
        f"{LOG}/ablations/{ABLATIONS.wildcard_pattern}/train.log",
    benchmark:
        f"{BENCH}/ablations/{ABLATIONS.wildcard_pattern}.tsv"
    shell:
        "L3M_THREADS={threads} {ENV} {TRAIN_CLI} train --config {CONFIG_FILE} --method l3m "
        "--init {input.init} --data {params.data} --out {output} --set {params.set:q} > {log} 2>&1"


rule ablation_eval:
    input:
        model=rules.ablation_train.output,
        test=rules.task_data.output.test,
    output:
        samples=f"{ABL_OUT}/{ABLATIONS.wildcard_pattern}/samples.jsonl",
        ppl=f"{ABL_OUT}/{ABLATIONS.wildcard_pattern}/perplexity.json",
        lengths=f"{ABL_OUT}/{ABLATIONS.wildcard_pattern}/lengths.json",
    params:
        data=f"{RES}/data/task",
    threads: 1
    log:
        f"{LOG}/ablations/{ABLATIONS.wildcard_pattern}/eval.log",
    shell:
        "(L3M_THREADS={threads} {ENV} {PY} -m methods.cli generate --config {CONFIG_FILE} --model {input.model} "
        "--data {params.data} --out {output.samples} && "
        "L3M_THREADS={threads} {ENV} {PY} -m evaluation.cli perplexity --config {CONFIG_FILE} --model {input.model} "
        "--data {params.data} --out {output.ppl} && "
        "{ENV} {PY} -m evaluation.cli lengths --config {CONFIG_FILE} --samples {output.samples} --out {output.lengths}"
        ") > {log} 2>&1"


rule ablation_table:
    input:
        expand(f"{ABL_OUT}/{{params}}/lengths.json", params=ABLATIONS.instance_patterns),
        expand(f"{ABL_OUT}/{{params}}/perplexity.json", params=ABLATIONS.instance_patterns),
    output:
        table=report(f"{OUT}/tables/ablations.csv", category="Ablations", caption="../report/ablations.rst"),
        png=report(f"{FIG}/ablations.png", category="Ablations", caption="../report/ablations.rst"),
        pdf=f"{FIG}/ablations.pdf",
    params:
        patterns=",".join(ABLATIONS.instance_patterns),
        names=",".join(ABLATIONS.dataframe["name"]),
    log:
        f"{LOG}/ablation_table.log",
    shell:
        "{ENV} {PY} -m evaluation.cli ablations --config {CONFIG_FILE} --results {ABL_OUT} --models-dir {ABL_RES} "
        "--patterns {params.patterns} --names {params.names} --table {output.table} --out {output.png} > {log} 2>&1"


rule ablations:
    input:
        rules.ablation_table.output,
