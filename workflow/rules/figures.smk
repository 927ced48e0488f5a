# Figures, each as PNG and PDF; the PNGs go into the Snakemake report.


rule figure1:
    output:
        png=report(f"{FIG}/fig1_barrier.png", category="Figures", caption="../report/fig1.rst"),
        pdf=f"{FIG}/fig1_barrier.pdf",
    params:
        fp=fingerprint("figures"),
    log:
        f"{LOG}/figure1.log",
    shell:
        "{ENV} {PY} -m evaluation.cli figure1 --config {CONFIG_FILE} --out {output.png} > {log} 2>&1"


rule metrics_figure:
    input:
        table=TABLE,
        samples=expand(f"{OUT}/samples/{{model}}.jsonl", model=MODELS),
    output:
        png=report(f"{FIG}/metrics.png", category="Figures", caption="../report/metrics.rst"),
        pdf=f"{FIG}/metrics.pdf",
    params:
        samples=f"{OUT}/samples",
    log:
        f"{LOG}/metrics_figure.log",
    shell:
        "{ENV} {PY} -m evaluation.cli metrics-figure --config {CONFIG_FILE} --table {input.table} "
        "--samples-dir {params.samples} --out {output.png} > {log} 2>&1"
