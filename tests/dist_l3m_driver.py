"""Run L3M from a config and record each step's constraint estimates and multipliers as this
process saw them (launched by tests/test_distributed.py once plainly and once under torchrun)."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(cfg_path, init, data, out, record):
    import yaml

    import methods.l3m as l3m
    from methods.core.onpolicy import OnPolicyRun

    seen = []
    OnPolicyRun.step_hooks.append(lambda run: seen.append(
        {k: run.stats[k] for k in ("c_batch", "c_hat", "lam", "sampled_tokens")} | {"rank": run.rank,
                                                                                    "world": run.world}))
    l3m.train(yaml.safe_load(Path(cfg_path).read_text()), init, out, data)
    Path(record).with_name(f"{Path(record).stem}_rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(*sys.argv[1:])
