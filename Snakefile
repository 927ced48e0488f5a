# l3m-bench: the whole DAG. `snakemake --cores all` runs the embedded default (config/config.yaml);
# `snakemake --cores all --configfile config/smollm2.yaml` a named config; see README.md.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/tune.smk"


report: "workflow/report/workflow.rst"


onstart:
    write_config_file()


# Seconds of work each: run beside Snakemake rather than through the cluster queue (--profile slurm).
localrules:
    all,
    ablations,
    ablation_table,
    tune,
    tune_table,
    tune_test_table,
    task_data,
    preference_data,
    contrast_data,
    aggregate,
    figure1,
    metrics_figure,
    figure2,
    training_curves,
    two_reward,
    comparisons,
    cost_table,


rule all:
    default_target: True
    input:
        TABLE,
        expand(f"{FIG}/{{fig}}.{{ext}}", fig=["fig1_barrier", "metrics"], ext=["png", "pdf"]),
        f"{OUT}/data/task_card.json",
        f"{OUT}/data/preferences_card.json",
        expand(f"{FIG}/{{fig}}.{{ext}}", fig=["fig2_length"] if LENGTH_MODELS else [], ext=["png", "pdf"]),
        expand(
            f"{OUT}/seed{{seed}}/figures/curves/{{model}}.png",
            seed=SEEDS,
            model=LENGTH_MODELS + POINT_MODELS + CPO_MODELS,
        ),
        expand(f"{FIG}/comparisons.{{ext}}", ext=["png", "pdf"] if POINT_MODELS or LENGTH_MODELS else []),
        expand(
            f"{OUT}/data/{{card}}_card.json",
            card=(["contrast"] if "contrast" in PAIR_SETS else []) + [f"rm_{r}" for r in USED_RM_REWARDS],
        ),
        expand(
            f"{FIG}/{{fig}}.{{ext}}", fig=["fig3_two_reward", "pareto"] if TWO["enabled"] else [], ext=["png", "pdf"]
        ),
        ([f"{OUT}/tables/two_reward.csv"] if TWO["enabled"] else []) + ([f"{BENCH}/cost.csv"] if POINT_MODELS else []),
