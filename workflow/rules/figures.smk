# Figures, each as PNG and PDF; the PNGs go into the Snakemake report.


rule figure1:
    output:
        png=report(f"{FIG}/fig1_barrier.png", category="Figures", caption="../report/fig1.rst"),
        pdf=f"{FIG}/fig1_barrier.pdf",
    log:
        f"{LOG}/figure1.log",
    conda:
        CONDA_ENV
    params:
        fp=fingerprint("figures"),
    shell:
        "{ENV} {PY} -m evaluation.cli figure1 --config {CONFIG_FILE} --out {output.png} > {log} 2>&1"


rule metrics_figure:
    input:
        table=TABLE,
        samples=expand(f"{OUT}/samples/{{model}}.jsonl", model=MODELS),
    output:
        png=report(f"{FIG}/metrics.png", category="Figures", caption="../report/metrics.rst"),
        pdf=f"{FIG}/metrics.pdf",
    log:
        f"{LOG}/metrics_figure.log",
    conda:
        CONDA_ENV
    params:
        samples=parent("samples"),
        models=",".join(MODELS),
    shell:
        "{ENV} {PY} -m evaluation.cli metrics-figure --config {CONFIG_FILE} --table {input.table} "
        "--samples-dir {params.samples} --models {params.models} --out {output.png} > {log} 2>&1"


rule figure2:
    """Figure 2 of the paper and its table: the length-constrained L3Ms beside SFT."""
    input:
        metrics=expand(
            f"{OUT}/metrics/{{model}}/{{m}}.json", model=["sft"] + LENGTH_MODELS, m=["perplexity", "lengths"]
        ),
        samples=expand(f"{OUT}/samples/{{model}}.jsonl", model=["sft"] + LENGTH_MODELS),
        models=[model_dir(m) for m in LENGTH_MODELS],
    output:
        png=report(f"{FIG}/fig2_length.png", category="Figures", caption="../report/fig2.rst"),
        pdf=f"{FIG}/fig2_length.pdf",
        table=report(f"{OUT}/tables/length_experiment.csv", category="Tables", caption="../report/fig2.rst"),
    log:
        f"{LOG}/figure2.log",
    conda:
        CONDA_ENV
    params:
        out=parent("metrics", levels=3),
        models=parent("models"),
    shell:
        "{ENV} {PY} -m evaluation.cli figure2 --config {CONFIG_FILE} --results {params.out} "
        "--models-dir {params.models} --table {output.table} --out {output.png} > {log} 2>&1"


rule training_curves:
    """Per L3M run: constraint estimates against bounds, multipliers, mu and task loss per step."""
    input:
        model_dir("{model}"),
    output:
        png=report(f"{FIG}/curves/{{model}}.png", category="Training curves", caption="../report/curves.rst"),
        pdf=f"{FIG}/curves/{{model}}.pdf",
        log=f"{OUT}/train_logs/{{model}}.jsonl",
    log:
        f"{LOG}/curves_{{model}}.log",
    conda:
        CONDA_ENV
    shell:
        "cp {input}/train_log.jsonl {output.log} && {ENV} {PY} -m evaluation.cli curves --config {CONFIG_FILE} "
        "--log {output.log} --out {output.png} > {log} 2>&1"


rule two_reward:
    """Figure 3, the Pareto figure and the two-reward table: L3Ms and MMs per constraint point, the
    mixture grid, DPO and CPO, beside the initialisation model and SFT."""
    input:
        metrics=expand(
            f"{OUT}/metrics/{{model}}/{{m}}.json",
            model=["base", "sft"] + TWO_MODELS,
            m=["perplexity"] + [f"reward_{r}" for r in TWO["rewards"] + TWO_CHECKS],
        ),
        models=[model_dir(m) for m in TWO_MODELS],
    output:
        png=report(f"{FIG}/fig3_two_reward.png", category="Figures", caption="../report/fig3.rst"),
        pdf=f"{FIG}/fig3_two_reward.pdf",
        pareto=report(f"{FIG}/pareto.png", category="Figures", caption="../report/pareto.rst"),
        pareto_pdf=f"{FIG}/pareto.pdf",
        table=report(f"{OUT}/tables/two_reward.csv", category="Tables", caption="../report/fig3.rst"),
    log:
        f"{LOG}/two_reward.log",
    conda:
        CONDA_ENV
    params:
        out=parent("metrics", levels=3),
        models=parent("models"),
    shell:
        "{ENV} {PY} -m evaluation.cli two-reward --config {CONFIG_FILE} --results {params.out} "
        "--models-dir {params.models} --table {output.table} --out {output.png} --pareto {output.pareto} > {log} 2>&1"


rule cost_table:
    """The cost claim: per constraint point, each constrained method's whole training chain (L3M: one
    stage from init; MM: SFT, then MM), from the training jobs' benchmark files."""
    input:
        models=[model_dir(m) for m in ["sft"] + POINT_MODELS],
    output:
        table=report(f"{BENCH}/cost.csv", category="Benchmarks", caption="../report/cost.rst"),
    log:
        f"{LOG}/cost_table.log",
    conda:
        CONDA_ENV
    params:
        bench=json.dumps({m: train_benchmark(m) for m in ["sft"] + POINT_MODELS}),
    shell:
        "{ENV} {PY} -m evaluation.cli cost --config {CONFIG_FILE} --bench {params.bench:q} --table {output.table} > {log} 2>&1"
