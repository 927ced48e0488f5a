import copy
import os

import pytest
import yaml

from methods.core.config import ConfigError, load_config, validate_config

from .conftest import REPO


def base():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def errors_of(cfg) -> str:
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    return str(e.value)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_validate(name):
    """Every config shipped in config/ (each a complete run: named configs do not stack)."""
    cfg = load_config(REPO / "config" / f"{name}.yaml")
    assert cfg["name"] == name if name != "config" else cfg["name"] == "default"
    assert cfg["figures"]["barrier_mus"] == [1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01]  # default filled in


def test_defaults_filled_without_touching_input():
    raw = {"name": "x"}
    cfg = validate_config(raw)
    assert raw == {"name": "x"}
    assert cfg["sft"]["lr"] == 0.001 and cfg["data"]["source"] == "chitchat"
    assert cfg["base_model"]["pretrain"]["steps"] == 600


def test_unknown_key_named():
    cfg = base()
    cfg["sft"]["learning_rate"] = 1e-4
    msg = errors_of(cfg)
    assert "config.sft" in msg and "learning_rate" in msg and "known keys" in msg


def test_unknown_top_level_key():
    cfg = base()
    cfg["tranining"] = {}
    assert "tranining" in errors_of(cfg)


def test_wrong_type_named():
    cfg = base()
    cfg["sft"]["batch_size"] = "thirty-two"
    msg = errors_of(cfg)
    assert "config.sft.batch_size" in msg and "wrong type" in msg


def test_impossible_values_named():
    cfg = base()
    cfg["data"]["n_test"] = 0
    cfg["generation"]["top_p"] = 1.5
    msg = errors_of(cfg)
    assert "config.data.n_test" in msg and "config.generation.top_p" in msg  # all problems at once


@pytest.mark.parametrize("band,needle", [([-5, 10], "negative"), ([30, 10], "lo 30 > hi 10")])
def test_length_band_errors(band, needle):
    cfg = base()
    cfg["constraints"] = [{"reward": "length", "band": band}]
    msg = errors_of(cfg)
    assert "config.constraints[0].band" in msg and needle in msg


def test_constraint_reward_must_exist():
    cfg = base()
    cfg["constraints"] = [{"reward": "helpful", "bound": 0.5}]
    assert "config.constraints[0].reward" in errors_of(cfg)


def test_missing_model_path(tmp_path):
    cfg = base()
    cfg["base_model"] = {"source": "hf", "hf": {"name_or_path": str(tmp_path / "nope")}}
    msg = errors_of(cfg)
    assert "config.base_model.hf.name_or_path" in msg and "does not exist" in msg
    (tmp_path / "empty").mkdir()
    cfg["base_model"]["hf"]["name_or_path"] = str(tmp_path / "empty")
    assert "holds no config.json" in errors_of(cfg)
    cfg["base_model"]["hf"]["name_or_path"] = "meta-llama/Llama-2-7b-hf"
    msg = errors_of(cfg)  # offline (the default): a hub id cannot load, said before any job
    assert ("config.base_model.hf.name_or_path: 'meta-llama/Llama-2-7b-hf' is not a local folder" in msg
            and "this config runs offline" in msg and "point it at a local folder" in msg)
    validate_config(dict(cfg, offline=False))  # where a hub is reachable it is left to the hub


def test_names_that_would_write_outside_their_folders_are_rejected():
    for bad in ("..", ".", "a/b"):
        msg = errors_of(dict(base(), name=bad))
        assert f"config.name: {bad!r} is not allowed here; run name" in msg


def test_a_relative_local_folder_is_local_not_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "models" / "mybase").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = base()
    cfg["base_model"] = {"source": "hf", "hf": {"name_or_path": "models/mybase"}}
    assert "holds no config.json" in errors_of(cfg)  # taken as the folder it is, offline or not
    (tmp_path / "models" / "mybase" / "config.json").write_text("{}")
    validate_config(cfg)
    cfg["base_model"]["hf"]["name_or_path"] = "models/other/base"
    assert "neither an existing local folder nor a hub id" in errors_of(dict(cfg, offline=False))


def test_the_jobs_are_offline_only_when_the_config_is(tmp_path):
    """offline: true puts HF_HUB_OFFLINE=1 on every job's command line; offline: false leaves the user's
    environment to decide (a dry run prints the commands)."""
    import subprocess
    import sys

    from .conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    for offline in (True, False):
        over = tmp_path / f"o{offline}.yaml"
        over.write_text(f"offline: {str(offline).lower()}\n")
        p = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p", "--cores", "1",
                            "--configfile", str(REPO / "config" / "micro.yaml"), str(over), "--directory", str(tmp_path),
                            "task_data"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        cmd = next(line for line in p.stdout.splitlines() if "methods.cli data" in line)
        assert ("HF_HUB_OFFLINE=1" in cmd and "HF_DATASETS_OFFLINE=1" in cmd) == offline


def test_hf_sources_need_a_path():
    cfg = base()
    cfg["data"]["source"] = "hf"
    assert "config.data.hf.path" in errors_of(cfg)


def test_unknown_model_and_reward_in_evaluation():
    cfg = base()
    cfg["evaluation"]["models"] = ["base", "sfft"]
    cfg["evaluation"]["rewards"] = ["toxicity"]
    msg = errors_of(cfg)
    assert "config.evaluation.models[1]" in msg and "config.evaluation.rewards[0]" in msg


def test_not_a_mapping():
    assert "expected a mapping" in errors_of(["name", "x"])


def test_bf16_on_cpu_rejected():
    cfg = copy.deepcopy(base())
    cfg["hardware"]["bf16"] = True
    assert "config.hardware.bf16" in errors_of(cfg)


def test_a_batch_that_does_not_split_over_the_processes_is_named():
    """The config check and the trainer's own check (torchrun with another world size) are one rule."""
    from methods.core.distributed import split_errors

    cfg = copy.deepcopy(base())
    cfg["hardware"]["processes"] = 3
    msg = errors_of(cfg)
    assert "config.onpolicy.batch_size: 32 does not split over hardware.processes = 3; use a multiple of 3" in msg
    assert "config.onpolicy.sample_prompts: 8 does not split" in msg
    assert split_errors({"batch_size": 8, "sample_prompts": 4}, 4, "l3m", "4 processes") == []
    assert split_errors({"batch_size": 6, "sample_prompts": 4}, 4, "l3m", "4 processes") == [
        "l3m.batch_size: 6 does not split over 4 processes; use a multiple of 4"]


def test_an_older_config_with_shared_keys_under_l3m_is_told_where_they_moved():
    cfg = copy.deepcopy(base())
    cfg["l3m"] = {"steps": 10, "batch_size": 16, "temperature": 0.7}
    msg = errors_of(cfg)
    assert "config.l3m.batch_size: moved to config.onpolicy.batch_size" in msg
    assert "config.l3m.temperature: moved to config.onpolicy.temperature" in msg
    assert "steps" not in msg


def test_seeds_default_to_the_task_seed_and_must_be_distinct():
    assert validate_config({"name": "x", "seed": 5})["seeds"] == [5]
    assert validate_config(base())["seeds"] == [1234, 1235, 1236]
    assert "config.seeds" in errors_of({"name": "x", "seeds": [1, 1]})
    assert "config.seeds" in errors_of({"name": "x", "seeds": []})


def test_budget_modes_derive_every_methods_steps():
    """The embedded default (equal_compute): L3M trains 160 steps of 32 task pairs + 8 x 4 samples =
    10,240 sequences; SFT one epoch of 5,120 pairs; so each method from SFT gets 5,120 sequences: MM 80
    steps of 32 + 32, the mixture 160 of 8 x 4 samples, DPO 80 of 32 pairs x 2 responses, CPO 40 of
    (32 objective + 32 constraint pairs) x 2. equal_steps: all 160. none: the sections' own values."""
    cfg = validate_config(base())
    assert (cfg["mm"]["steps"], cfg["mixture"]["steps"], cfg["dpo"]["max_steps"], cfg["cpo"]["steps"]) == (80, 160, 80, 40)
    raw = base()
    raw["budget"] = {"mode": "equal_steps"}
    cfg = validate_config(raw)
    assert (cfg["mm"]["steps"], cfg["mixture"]["steps"], cfg["dpo"]["max_steps"], cfg["cpo"]["steps"]) == (160,) * 4
    raw["budget"] = {"mode": "none"}
    cfg = validate_config(raw)
    assert (cfg["mm"]["steps"], cfg["mixture"]["steps"], cfg["dpo"]["max_steps"], cfg["cpo"]["steps"]) == (100, 60, -1, 80)
    # MM without the task term trains on samples only: 5,120 / 32 = 160 steps
    raw = base()
    raw["mm"]["task_weight"] = 0.0
    assert validate_config(raw)["mm"]["steps"] == 160
    # the resolved config (derived steps written out) validates again unchanged, and a run's override of
    # what the steps derive from re-derives them (DPO at 16 pairs a step: 5,120 / 32 = 160 steps)
    cfg = validate_config(base())
    assert validate_config(cfg) == cfg and cfg["budget"]["derived"]["mm.steps"] == 80
    assert validate_config({**cfg, "dpo": {**cfg["dpo"], "batch_size": 16}})["dpo"]["max_steps"] == 160
    # a chain that alone outspends the reference is named, not given 1 step
    raw = base()
    raw["l3m"]["steps"] = 60
    msg = errors_of(raw)
    assert "sft alone trains on 5120 sequences, at least the 3840 of l3m's run" in msg and "budget.mode" in msg


def test_a_budgeted_key_set_by_hand_is_named_with_the_fix():
    raw = base()
    raw["mm"]["steps"] = 60
    msg = errors_of(raw)
    assert "config.mm.steps: 60, but budget.mode equal_compute gives 80" in msg
    assert "remove config.mm.steps or set budget.mode: none" in msg
    raw = base()
    raw["budget"]["reference"] = "sft"
    assert "config.budget.reference: 'sft' is not a method with a budget" in errors_of(raw)
