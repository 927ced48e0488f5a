# Training: one rule for every method of methods/registry.py under its own name (sft, dpo, cpo, ...),
# one for the experiments' variants (registry `variants`: l3m_len<i>, l3m_pt<i>, mm_pt<i>, mix<j>), both once
# per training seed (config seeds), and one per reward model (shared by every seed). A method starts from
# the model its registry entry names (base, shared, or sft of the same seed).


rule train:
    input:
        init=init_model,
        train=rules.task_data.output.train,
        val=rules.task_data.output.val,
        extra=lambda w: method_inputs(w.method, {}),
    output:
        directory(model_dir("{method}")),
    log:
        f"{LOG}/seed{{seed}}/train_{{method}}.log",
    benchmark:
        train_benchmark("{method}")
    wildcard_constraints:
        method="|".join(METHODS),
    priority: 2  # SFT heads the longest chain (SFT -> MM, mixture, DPO, CPO -> evaluation): start it first
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=TRAIN_MEM,
        runtime=TRAIN_TIME,
        gpu=GPUS,
    params:
        fp=lambda w: train_fingerprint(w.method, seed=w.seed),
        data=parent("train"),
        set=seed_set(None),
    shell:
        "L3M_THREADS={threads} {ENV} {TRAIN_CLI} train --config {CONFIG_FILE} --method {wildcards.method} "
        "--init {input.init} --data {params.data} --out {output} --set {params.set:q} > {log} 2>&1"


rule train_variant:
    """A named variant: a method with config overrides (a length band, a constraint point, mixture weights)."""
    input:
        init=lambda w: model_dir(METHODS[VARIANTS[w.variant][0]].init_from, w.seed),
        train=rules.task_data.output.train,
        extra=lambda w: method_inputs(*VARIANTS[w.variant]),
    output:
        directory(model_dir("{variant}")),
    log:
        f"{LOG}/seed{{seed}}/train_{{variant}}.log",
    benchmark:
        train_benchmark("{variant}")
    wildcard_constraints:
        variant="|".join(VARIANTS) or "^$",
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=TRAIN_MEM,
        runtime=TRAIN_TIME,
        gpu=GPUS,
    params:
        fp=lambda w: train_fingerprint(*VARIANTS[w.variant], seed=w.seed),
        data=parent("train"),
        method=lambda w: VARIANTS[w.variant][0],
        set=seed_set(lambda w: VARIANTS[w.variant][1]),
    shell:
        "L3M_THREADS={threads} {ENV} {TRAIN_CLI} train --config {CONFIG_FILE} --method {params.method} "
        "--init {input.init} --data {params.data} --out {output} --set {params.set:q} > {log} 2>&1"


rule reward_model:
    """A reward the DAG builds: a Bradley-Terry reward model (TRL RewardTrainer) on its pair set, from
    its backbone (the base model or a pre-trained one), or a shipped scorer's normalisation; its card."""
    input:
        init=rm_backbone,
        pairs=lambda w: f"{pair_dir(CFG['rewards'][w.reward]['pairs'])}/train.jsonl",
        val=rules.task_data.output.val,
    output:
        model=directory(model_dir("rm_{reward}")),
        card=f"{OUT}/data/rm_{{reward}}_card.json",
    log:
        f"{LOG}/reward_model_{{reward}}.log",
    benchmark:
        f"{BENCH}/reward_model_{{reward}}.tsv"
    wildcard_constraints:
        reward="|".join(RM_REWARDS) or "^$",
    priority: 1  # every constraint-point model waits for the reward models
    conda:
        CONDA_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=TRAIN_MEM,
        runtime=TRAIN_TIME,
        gpu=GPUS,
    params:
        fp=lambda w: fingerprint("reward_model", "seed", "hardware", f"rewards.{w.reward}"),
        init=rm_init,
        pairs=parent("pairs"),
        data=parent("val"),
    shell:
        "L3M_THREADS={threads} {ENV} {TRAIN_CLI} reward-model --config {CONFIG_FILE} --name {wildcards.reward} "
        "--init {params.init} --pairs {params.pairs} --data {params.data} --out {output.model} --card {output.card} "
        "> {log} 2>&1"
