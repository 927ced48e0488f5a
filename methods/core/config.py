"""Config loading and validation: one JSON schema (workflow/schemas/config.schema.yaml) plus the
checks a schema cannot express. Runs before any job starts; every problem is reported at once,
each naming its field and what to do."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that cannot run. The message lists every problem, one per line, by field."""


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    """The parsed schema (read once per process; the validators never modify it)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(validator_class):
    """A validator that fills in schema defaults as it goes (the jsonschema FAQ recipe)."""
    from jsonschema import validators

    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _field(path) -> str:
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _message(err) -> str:
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        known = ", ".join(sorted(err.schema.get("properties", {}))) or "(free-form names)"
        return f"{_field(err.absolute_path)}: unknown key(s) {extra}; known keys: {known}"
    if err.validator == "type":
        return f"{_field(err.absolute_path)}: {err.instance!r} has the wrong type; expected {err.validator_value}"
    if err.validator == "enum":
        return f"{_field(err.absolute_path)}: {err.instance!r} is not one of {err.validator_value}"
    if err.validator == "pattern" and err.schema.get("description"):
        return f"{_field(err.absolute_path)}: {err.instance!r} is not allowed here; {err.schema['description']}"
    return f"{_field(err.absolute_path)}: {err.message}"


def _moved_keys(cfg: dict) -> list[str]:
    """Keys an older config has under ``l3m`` that now live in ``onpolicy`` (what L3M and MM share)."""
    moved = set(_schema()["properties"]["onpolicy"]["properties"])
    l3m = cfg.get("l3m")
    return [f"config.l3m.{k}: moved to config.onpolicy.{k} (the settings L3M and MM share); move it there"
            for k in (sorted(set(l3m) & moved) if isinstance(l3m, dict) else [])]


def validate_config(config, check_paths: bool = True) -> dict:
    """Return a deep copy of ``config`` with defaults filled in, or raise ConfigError."""
    from jsonschema import Draft202012Validator

    if not isinstance(config, dict):
        raise ConfigError(f"config: expected a mapping of keys to values, got {type(config).__name__}")
    cfg = copy.deepcopy(config)
    moved = _moved_keys(cfg)
    if moved:
        raise ConfigError("invalid config:\n  " + "\n  ".join(moved))
    validator = _with_defaults(Draft202012Validator)(_schema())
    errors = [_message(e) for e in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))]
    if not errors:
        errors = _semantic_errors(cfg, check_paths) + _resolve(cfg, config)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return cfg


def _semantic_errors(cfg: dict, check_paths: bool) -> list[str]:
    from methods.registry import METHODS

    errs = []
    rewards = cfg["rewards"]
    for name, r in rewards.items():
        if r["type"] == "hf_classifier" and not r.get("path"):
            errs.append(f"config.rewards.{name}.path: an hf_classifier reward needs a model folder or hub id")
        elif r["type"] == "hf_classifier" and check_paths:
            errs += _local_path_error(f"config.rewards.{name}.path", r["path"], offline=cfg["offline"])
        if r["type"] == "reward_model" and r.get("path"):
            errs.append(f"config.rewards.{name}.path: a reward_model reward is trained by the DAG; for a ready "
                        f"model folder or hub id use type: hf_classifier")
        trained_keys = [k for k in ("backbone", "lr", "epochs") if r.get(k) not in (None, "base")]
        if r["type"] != "reward_model" and trained_keys:
            key = trained_keys[0]
            errs.append(f"config.rewards.{name}.{key}: only a reward_model reward is trained (this one is "
                        f"{r['type']}); remove the key")
        elif r["type"] == "reward_model" and check_paths and r["backbone"] != "base":
            if r["backbone"].startswith("package:"):
                from methods.core.models import resolve_model_path

                try:
                    resolve_model_path(r["backbone"], f"config.rewards.{name}.backbone")
                except FileNotFoundError as e:
                    errs.append(str(e))
            else:
                errs += _local_path_error(f"config.rewards.{name}.backbone", r["backbone"], offline=cfg["offline"])
        if r.get("check") is not None:
            if r["check"] == name or r["check"] not in rewards:
                errs.append(f"config.rewards.{name}.check: {r['check']!r} must name another reward defined under "
                            f"config.rewards (defined: {sorted(rewards)})")
            elif (name in cfg["evaluation"]["rewards"] or (cfg["experiments"]["two_reward"]["enabled"] and
                                                            name in cfg["experiments"]["two_reward"]["rewards"])) and \
                    r["check"] not in cfg["evaluation"]["rewards"]:
                errs.append(f"config.rewards.{name}.check: {r['check']!r} is not scored; add it to "
                            f"config.evaluation.rewards")
    tw = cfg["experiments"]["two_reward"]
    if tw["enabled"]:
        for i, name in enumerate(tw["rewards"]):
            if name not in rewards:
                errs.append(f"config.experiments.two_reward.rewards[{i}]: {name!r} is not defined under config.rewards "
                            f"(defined: {sorted(rewards)})")
        if not tw["points"]:
            errs.append("config.experiments.two_reward.points: the experiment is enabled but lists no constraint points")
        elif tw["shade"] >= len(tw["points"]):
            errs.append(f"config.experiments.two_reward.shade: {tw['shade']} but there are only {len(tw['points'])} points")
    mix = cfg["mixture"]
    n_mix = len(mix["rewards"] or tw["rewards"])
    for i, w in enumerate(mix["weights"] + ([mix["weight"]] if mix["weight"] else [])):
        f = f"config.mixture.weights[{i}]" if i < len(mix["weights"]) else "config.mixture.weight"
        if len(w) != n_mix:
            errs.append(f"{f}: {w} has {len(w)} weights for {n_mix} mixed rewards; give one weight per reward")
        elif not any(w):
            errs.append(f"{f}: all weights are 0; the mixture would optimise nothing but the KL")
    for i, name in enumerate(mix["rewards"]):
        if name not in rewards:
            errs.append(f"config.mixture.rewards[{i}]: {name!r} is not defined under config.rewards")
    if not cfg["dpo"]["pairs"]:
        errs.append("config.dpo.pairs: name at least one pair set (preferences, contrast)")
    for i, name in enumerate(cfg["evaluation"]["rewards"]):
        if name not in rewards:
            errs.append(f"config.evaluation.rewards[{i}]: reward {name!r} is not defined under config.rewards "
                        f"(defined: {sorted(rewards)})")
    for i, name in enumerate(cfg["evaluation"]["models"]):
        if name != "base" and name not in METHODS:
            errs.append(f"config.evaluation.models[{i}]: {name!r} is neither 'base' nor a method "
                        f"({sorted(METHODS)})")
    for i, c in enumerate(cfg["constraints"]):
        f = f"config.constraints[{i}]"
        if "band" in c:
            lo, hi = c["band"]
            if lo < 0 or hi < 0:
                errs.append(f"{f}.band: {c['band']} has a negative bound; a length band is [lo, hi] with 0 <= lo <= hi")
            if lo > hi:
                errs.append(f"{f}.band: lo {lo} > hi {hi}; write the band as [lo, hi] with lo <= hi")
            if "bound" in c:
                errs.append(f"{f}: give either band or bound, not both")
        elif "bound" not in c:
            errs.append(f"{f}: needs a bound (with reward and direction) or a band [lo, hi]")
        if "reward" not in c:
            errs.append(f"{f}.reward: missing; name a reward defined under config.rewards")
        elif c["reward"] not in rewards:
            errs.append(f"{f}.reward: {c['reward']!r} is not defined under config.rewards ({sorted(rewards)})")
    lx = cfg["experiments"]["length"]
    if lx["enabled"] and not lx["bands"]:
        errs.append("config.experiments.length.bands: the length experiment is enabled but lists no bands")
    if lx["enabled"] and lx["reward"] not in rewards:
        errs.append(f"config.experiments.length.reward: {lx['reward']!r} is not defined under config.rewards")
    for i, (lo, hi) in enumerate(lx["bands"]):
        f = f"config.experiments.length.bands[{i}]"
        if lo < 0 or hi < 0:
            errs.append(f"{f}: [{lo}, {hi}] has a negative bound; a length band is [lo, hi] with 0 <= lo <= hi")
        elif lo > hi:
            errs.append(f"{f}: lo {lo} > hi {hi}; write the band as [lo, hi] with lo <= hi")
        elif lx["enabled"] and hi >= cfg["onpolicy"]["max_new_tokens"]:
            errs.append(f"{f}: hi {hi} must be below onpolicy.max_new_tokens {cfg['onpolicy']['max_new_tokens']} "
                        f"(sampling could not show a violation)")
    l3 = cfg["l3m"]
    if l3["mu_min"] > l3["mu0"]:
        errs.append(f"config.l3m.mu_min: {l3['mu_min']} > mu0 {l3['mu0']}")
    else:
        from methods.l3m import mu_schedule_error

        errs += [e for e in [mu_schedule_error(l3)] if e]
        for i, row in enumerate(cfg["ablations"]["settings"]):
            if not {"mu0", "mu_min", "mu_decay"} & set(row):
                continue  # the main schedule, checked above
            merged, field = {**l3, **row}, f"config.ablations.settings[{i}] ({row['name']})"
            err = (f"{field}: mu_min {merged['mu_min']} > mu0 {merged['mu0']}" if merged["mu_min"] > merged["mu0"]
                   else mu_schedule_error(merged, field))
            errs += [err] if err else []
    op = cfg["onpolicy"]
    if op["baseline"] == "loo" and op["samples_per_prompt"] < 2 and op["sample_prompts"] < 2:
        errs.append("config.onpolicy.baseline: a leave-one-out baseline needs at least 2 samples per step")
    d, b, p = cfg["data"], cfg["base_model"], cfg["preferences"]
    if d["source"] == "hf":
        if not d["hf"]["path"]:
            errs.append("config.data.hf.path: data.source is 'hf' but no hub id or local folder is given")
        elif check_paths:
            errs += _local_path_error("config.data.hf.path", d["hf"]["path"], offline=cfg["offline"])
    if p["source"] == "hf":
        if not p["hf"]["path"]:
            errs.append("config.preferences.hf.path: preferences.source is 'hf' but no hub id or local folder is given")
        elif check_paths:
            errs += _local_path_error("config.preferences.hf.path", p["hf"]["path"], offline=cfg["offline"])
    if b["source"] == "hf":
        if not b["hf"]["name_or_path"]:
            errs.append("config.base_model.hf.name_or_path: base_model.source is 'hf' but no hub id or folder is given")
        elif check_paths:
            errs += _local_path_error("config.base_model.hf.name_or_path", b["hf"]["name_or_path"], need="config.json",
                                      offline=cfg["offline"])
    if b["source"] == "pretrain":
        pre = b["pretrain"]
        if pre["hidden_size"] % pre["num_heads"]:
            errs.append(f"config.base_model.pretrain.hidden_size: {pre['hidden_size']} is not divisible by "
                        f"num_heads {pre['num_heads']}")
        if cfg["sft"]["max_length"] > pre["max_length"]:
            errs.append(f"config.sft.max_length: {cfg['sft']['max_length']} exceeds the base model's context "
                        f"base_model.pretrain.max_length {pre['max_length']}")
    if cfg["hardware"]["device"] == "cpu" and cfg["hardware"]["bf16"]:
        errs.append("config.hardware.bf16: bf16 mixed precision needs hardware.device: cuda")
    from methods.core.distributed import split_errors

    procs = cfg["hardware"]["processes"]
    errs += split_errors(cfg["onpolicy"], procs, "config.onpolicy", f"hardware.processes = {procs}")
    if cfg["hardware"]["fsdp"] and cfg["hardware"]["processes"] < 2:
        errs.append("config.hardware.fsdp: sharding needs hardware.processes >= 2 (one per GPU); "
                    "set processes or fsdp: false")
    return errs


def _resolve(cfg: dict, raw: dict) -> list[str]:
    """Fill in what follows from other keys: ``seeds`` (null: [seed]) and, under a budget mode, every
    budgeted method's steps (methods/registry.py ``budget_steps``). A budgeted key the config sets
    itself must equal the derived value; returns the errors."""
    from methods.registry import METHODS, budget_steps

    if cfg["seeds"] is None:
        cfg["seeds"] = [cfg["seed"]]
    if cfg["tune"]["seeds"] is None:
        cfg["tune"]["seeds"] = list(cfg["seeds"])
    errs = []
    b = cfg["budget"]
    if b["mode"] != "none" and (b["reference"] not in METHODS or METHODS[b["reference"]].budget is None):
        with_budget = sorted(m.name for m in METHODS.values() if m.budget)
        return errs + [f"config.budget.reference: {b['reference']!r} is not a method with a budget ({with_budget})"]
    try:
        derived = budget_steps(cfg)
    except ValueError as e:
        return errs + [f"config.budget: {e}"]
    # a resolved config (the DAG's config file) carries what was derived; a job's --set may change what it
    # was derived from, so a value equal to the recorded derivation is re-derived, not a user's setting
    before = (raw.get("budget") or {}).get("derived") or {}
    for key, steps in derived.items():
        section, name = key.split(".")
        given = (raw.get(section) or {}).get(name) if isinstance(raw.get(section), dict) else None
        if given is not None and given == before.get(key):
            given = None
        if given is not None and given != steps:
            errs.append(f"config.{key}: {given}, but budget.mode {b['mode']} gives {steps} (from "
                        f"{b['reference']}'s steps and each method's sequences per step); remove config.{key} "
                        f"or set budget.mode: none")
        cfg[section][name] = steps
    if b["mode"] != "none":
        b["derived"] = derived
    import itertools

    for method in cfg["tune"]["methods"] or []:
        if method not in cfg["tune"]["grid"]:
            errs.append(f"config.tune.methods: {method!r} has no grid in config.tune.grid ({sorted(cfg['tune']['grid'])}); "
                        f"add its grid or drop it from tune.methods")
        elif not cfg["experiments"]["two_reward"]["enabled"] or not cfg["experiments"]["two_reward"].get(method, True):
            errs.append(f"config.tune.methods: {method!r} has no model in the two-reward experiment (experiments."
                        f"two_reward.{'enabled' if not cfg['experiments']['two_reward']['enabled'] else method}: false), "
                        f"so its sweep would train nothing; enable it there or drop it from tune.methods")
    for method, grid in cfg["tune"]["grid"].items():
        if method not in METHODS or METHODS[method].grid not in ("constraints", "weights", "single"):
            errs.append(f"config.tune.grid.{method}: not a method of the two-reward experiment "
                        f"({sorted(m.name for m in METHODS.values() if m.grid)})")
            continue
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            errs += _setting_errors(cfg, method, dict(zip(keys, combo)), f"config.tune.grid.{method}")
    errs += _tuned_errors(cfg)
    return list(dict.fromkeys(errs))  # a grid key's error once, not once per combination


def _tuned_errors(cfg: dict) -> list[str]:
    """experiments.two_reward.tuned, entry by entry: a method with one model per point, defined rewards,
    one bound per reward, one entry per (method, rewards, point), and an entry for the experiment's
    reward pair names one of its points (a typo in a point would otherwise train the untuned model
    without a word); its setting as the job will see it (``_setting_errors``). Entries for another
    reward pair belong to another experiment and are left alone."""
    from methods.registry import METHODS, same_point

    two, errs, seen = cfg["experiments"]["two_reward"], [], []
    for i, e in enumerate(two["tuned"]):
        where = f"config.experiments.two_reward.tuned[{i}]"
        if e["method"] not in METHODS or METHODS[e["method"]].grid != "constraints":
            errs.append(f"{where}.method: {e['method']} is not a method with one model per constraint point "
                        f"({sorted(m.name for m in METHODS.values() if m.grid == 'constraints')}); set the "
                        "other methods' chosen values in their own sections")
            continue
        undefined = [r for r in e["rewards"] if r not in cfg["rewards"]]
        if undefined:
            errs.append(f"{where}.rewards: {undefined} not defined in config.rewards ({sorted(cfg['rewards'])})")
        if len(e["point"]) != len(e["rewards"]):
            errs.append(f"{where}.point: {len(e['point'])} bounds for {len(e['rewards'])} rewards")
            continue
        if any(m == e["method"] and r == e["rewards"] and same_point(p, e["point"]) for m, r, p in seen):
            errs.append(f"{where}: {e['method']} at {e['point']} has an entry already; give one per point")
        seen.append((e["method"], e["rewards"], e["point"]))
        if sorted(e["rewards"]) == sorted(two["rewards"]) and e["rewards"] != two["rewards"]:
            errs.append(f"{where}.rewards: {e['rewards']} is the experiment's pair in another order; write the "
                        f"rewards and the point in the order of experiments.two_reward.rewards ({two['rewards']})")
        elif e["rewards"] == two["rewards"] and not any(same_point(p, e["point"]) for p in two["points"]):
            errs.append(f"{where}.point: {e['point']} is none of experiments.two_reward.points "
                        f"({two['points']}); correct it, or drop the entry (an overlay with other points: tuned: [])")
        errs += _setting_errors(cfg, e["method"], e["set"], f"{where}.set")
    return errs


def _setting_errors(cfg: dict, method: str, values: dict, where: str) -> list[str]:
    """One model's own settings ({"section.key": value}: a sweep setting of config.tune.grid, or a chosen
    entry of experiments.two_reward.tuned) checked before any job, as its training job would see them:
    each key exists, the changed sections still pass the schema, and under a budget mode the model's chain
    (SFT then MM; L3M alone) trains on the same sequences as without them. The job re-derives its budgeted
    steps from its own settings, so a key that changes the sequences per step (onpolicy.sample_prompts) or
    the reference's steps would silently change what the model is compared at; budgeted steps themselves
    are derived, never set."""
    from jsonschema import Draft202012Validator

    from methods.registry import budget_steps, chain, nest, sequences

    errs = []
    for key in values:
        section, name = key.split(".")
        if not isinstance(cfg.get(section), dict) or name not in cfg[section]:
            errs.append(f"{where}.{key}: no such config key; name a key as section.key (e.g. {method}.lr)")
    if errs:
        return errs
    changed = nest(values)
    merged = deep_merge(cfg, changed)
    props = _schema()["properties"]
    for section in changed:
        validator = Draft202012Validator(props[section])
        errs += [f"{where}: {_message(e).replace('config', f'config.{section}', 1)}"
                 for e in validator.iter_errors(merged[section])]
    if errs or cfg["budget"]["mode"] == "none":
        return errs
    mode = cfg["budget"]["mode"]
    for key in [k for k in values if k in (cfg["budget"].get("derived") or {})]:
        errs.append(f"{where}.{key}: budgeted steps follow from budget.mode {mode}; leave the key out (or set "
                    "budget.mode: none)")
    if errs:
        return errs
    try:
        for key, steps in budget_steps(merged).items():  # as the job re-derives them from its own settings
            section, name = key.split(".")
            merged[section][name] = steps
    except ValueError as e:
        return [f"{where}: {e}"]
    for c in chain(method):
        was, now = sequences(cfg, c), sequences(merged, c)
        if was != now:
            errs.append(f"{where}: {values} would make {c} train on {now} sequences instead of {was}, off the "
                        f"budget every method gets under budget.mode {mode}; leave keys that set steps or sequences "
                        "per step out of per-model settings, or set budget.mode: none")
    return errs


def _local_path_error(field: str, value: str, need: str | None = None, offline: bool = False) -> list[str]:
    """A value that looks like a path (absolute, ./, ../ or ~) or names an existing folder must be a
    usable local folder; anything else is a hub id, which an offline config cannot load."""
    p = Path(value).expanduser()
    if value.startswith(("/", "./", "../", "~")) or p.exists():
        if not p.exists():
            return [f"{field}: local path {value} does not exist; fix the path or use a hub id"]
        if need and not (p / need).exists():
            return [f"{field}: {value} holds no {need}; point it at an HF model folder"]
        return []
    if offline:
        return [f"{field}: {value!r} is not a local folder (nothing at {p.absolute()}), so it would be a hub id, but "
                f"this config runs offline (offline: true: no network, nothing is downloaded); point it at a local "
                f"folder (./path, ../path, an absolute path or an existing relative one), or set offline: false "
                f"where a hub is reachable"]
    if value.count("/") > 1:
        return [f"{field}: {value!r} is neither an existing local folder nor a hub id (org/name); fix the path"]
    return []


def read_config_files(paths) -> dict:
    """Config files merged as Snakemake merges ``--configfile A B``: later files override earlier ones."""
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, read_config_file(path))
    return merged


def read_config_file(path: str | Path) -> dict:
    """One YAML config file as a mapping; a syntax error names the file, line and column."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file; check the path (named configs live in config/)")
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the syntax there") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; a config needs at least `name: <run name>`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    raw = read_config_file(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate_config(raw)


def deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out
