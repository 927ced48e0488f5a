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
        samples=expand(f"{OUT}/seed{{seed}}/samples/{{model}}.jsonl", seed=SEEDS, model=MODELS),
    output:
        png=report(f"{FIG}/metrics.png", category="Figures", caption="../report/metrics.rst"),
        pdf=f"{FIG}/metrics.pdf",
    log:
        f"{LOG}/metrics_figure.log",
    conda:
        CONDA_ENV
    params:
        samples=parent("samples", levels=3),
        models=",".join(MODELS),
    shell:
        "{ENV} {PY} -m evaluation.cli metrics-figure --config {CONFIG_FILE} --table {input.table} "
        "--samples-dir {params.samples} --models {params.models} --out {output.png} > {log} 2>&1"


rule figure2:
    """Figure 2 of the paper and its table: the length-constrained L3Ms beside SFT, over the seeds."""
    input:
        metrics=expand(
            f"{OUT}/seed{{seed}}/metrics/{{model}}/{{m}}.json",
            seed=SEEDS,
            model=["sft"] + LENGTH_MODELS,
            m=["perplexity", "lengths"],
        ),
        samples=expand(f"{OUT}/seed{{seed}}/samples/{{model}}.jsonl", seed=SEEDS, model=["sft"] + LENGTH_MODELS),
        models=[model_dir(m, s) for s in SEEDS for m in LENGTH_MODELS],
    output:
        png=report(f"{FIG}/fig2_length.png", category="Figures", caption="../report/fig2.rst"),
        pdf=f"{FIG}/fig2_length.pdf",
        table=report(f"{OUT}/tables/length_experiment.csv", category="Tables", caption="../report/fig2.rst"),
        per_seed=f"{OUT}/tables/length_experiment_per_seed.csv",
    log:
        f"{LOG}/figure2.log",
    conda:
        CONDA_ENV
    params:
        out=parent("metrics", levels=4),
        models=parent("models", levels=3),
    shell:
        "{ENV} {PY} -m evaluation.cli figure2 --config {CONFIG_FILE} --results {params.out} "
        "--models-dir {params.models} --table {output.table} --per-seed {output.per_seed} --out {output.png} "
        "> {log} 2>&1"


rule training_curves:
    """Per L3M, MM or CPO run and seed: constraint estimates against bounds, multipliers, mu and task loss
    per step (CPO: its violation, lambda, DPO loss and margins)."""
    input:
        model_dir("{model}"),
    output:
        png=report(
            f"{seed_out()}/figures/curves/{{model}}.png", category="Training curves", caption="../report/curves.rst"
        ),
        pdf=f"{seed_out()}/figures/curves/{{model}}.pdf",
        log=f"{seed_out()}/train_logs/{{model}}.jsonl",
    log:
        f"{LOG}/seed{{seed}}/curves_{{model}}.log",
    conda:
        CONDA_ENV
    shell:
        "cp {input}/train_log.jsonl {output.log} && {ENV} {PY} -m evaluation.cli curves --config {CONFIG_FILE} "
        "--log {output.log} --out {output.png} > {log} 2>&1"


rule two_reward:
    """Figure 3, the Pareto figure and the two-reward table: L3Ms and MMs per constraint point, the
    mixture grid, DPO and CPO, beside the initialisation model and SFT, over the seeds."""
    input:
        metrics=expand(
            f"{OUT}/seed{{seed}}/metrics/{{model}}/{{m}}.json",
            seed=SEEDS,
            model=["base", "sft"] + TWO_MODELS,
            m=["perplexity"] + [f"reward_{r}" for r in TWO["rewards"] + TWO_CHECKS],
        ),
        models=[model_dir(m, s) for s in SEEDS for m in TWO_MODELS],
    output:
        png=report(f"{FIG}/fig3_two_reward.png", category="Figures", caption="../report/fig3.rst"),
        pdf=f"{FIG}/fig3_two_reward.pdf",
        pareto=report(f"{FIG}/pareto.png", category="Figures", caption="../report/pareto.rst"),
        pareto_pdf=f"{FIG}/pareto.pdf",
        table=report(f"{OUT}/tables/two_reward.csv", category="Tables", caption="../report/fig3.rst"),
        per_seed=f"{OUT}/tables/two_reward_per_seed.csv",
    log:
        f"{LOG}/two_reward.log",
    conda:
        CONDA_ENV
    params:
        out=parent("metrics", levels=4),
        models=parent("models", levels=3),
    shell:
        "{ENV} {PY} -m evaluation.cli two-reward --config {CONFIG_FILE} --results {params.out} "
        "--models-dir {params.models} --table {output.table} --per-seed {output.per_seed} --out {output.png} "
        "--pareto {output.pareto} > {log} 2>&1"


rule comparisons:
    """Paired comparisons per constraint point and band: L3M against every other constrained method, the
    point-free models (DPO, CPO) at every point, the mixture model nearest the point on its Pareto front
    (drawn on the val prompts) and SFT; paired intervals over seeds and test prompts."""
    input:
        metrics=expand(
            f"{OUT}/seed{{seed}}/metrics/{{model}}/{{m}}.json",
            seed=SEEDS,
            model=["sft"] + LENGTH_MODELS + TWO_MODELS,
            m=["perplexity", "lengths"] + [f"reward_{r}" for r in REWARDS],
        ),
        val=expand(
            f"{OUT}/val/seed{{seed}}/metrics/{{model}}/reward_{{r}}.json",
            seed=SEEDS,
            model=FRONT_MODELS,
            r=TWO["rewards"],
        ),
    output:
        table=report(f"{OUT}/tables/comparisons.csv", category="Tables", caption="../report/comparisons.rst"),
        png=report(f"{FIG}/comparisons.png", category="Figures", caption="../report/comparisons.rst"),
        pdf=f"{FIG}/comparisons.pdf",
    log:
        f"{LOG}/comparisons.log",
    conda:
        CONDA_ENV
    params:
        out=parent("metrics", levels=4),
    shell:
        "{ENV} {PY} -m evaluation.cli comparisons --config {CONFIG_FILE} --results {params.out} "
        "--table {output.table} --out {output.png} > {log} 2>&1"


rule cost_table:
    """The cost claim: per constraint point, each constrained method's whole training chain (L3M: one
    stage from init; MM: SFT, then MM), per seed, from the training jobs' benchmark files."""
    input:
        models=[model_dir(m, s) for s in SEEDS for m in ["sft"] + POINT_MODELS],
    output:
        table=report(f"{BENCH}/cost.csv", category="Benchmarks", caption="../report/cost.rst"),
    log:
        f"{LOG}/cost_table.log",
    conda:
        CONDA_ENV
    params:
        bench=json.dumps({s: {m: train_benchmark(m, s) for m in ["sft"] + POINT_MODELS} for s in SEEDS}),
        models=parent("models", levels=3),
    shell:
        "{ENV} {PY} -m evaluation.cli cost --config {CONFIG_FILE} --bench {params.bench:q} --models-dir {params.models} --table {output.table} > {log} 2>&1"
