"""Run L3M from a config and record each step's constraint estimates and multipliers as this
process saw them (launched by tests/test_distributed.py once plainly and once under torchrun)."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(cfg_path, init, data, out, record):
    """STOP_AT=N in the environment: rank 0 alone raises the pre-emption flag after step N (as a
    SIGTERM would): every rank must checkpoint and stop there (exit 143); a rerun resumes."""
    import yaml

    import methods.l3m as l3m
    from methods.core import preempt
    from methods.core.onpolicy import OnPolicyRun

    seen, stop = [], int(os.environ.get("STOP_AT", "0"))

    def hook(run):
        seen.append({k: run.stats[k] for k in ("c_batch", "c_hat", "lam", "sampled_tokens")}
                    | {"rank": run.rank, "world": run.world, "step": run.state["step"]})
        if stop and run.rank == 0 and run.state["step"] == stop:
            preempt._STATE["signal"] = 15

    OnPolicyRun.step_hooks.append(hook)
    from methods.core.distributed import shutdown

    code = 0
    try:
        l3m.train(yaml.safe_load(Path(cfg_path).read_text()), init, out, data)
    except preempt.Preempted:
        code = preempt.EXIT_CODE
    finally:
        shutdown()
    Path(record).with_name(f"{Path(record).stem}_rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))
    sys.exit(code)


if __name__ == "__main__":
    main(*sys.argv[1:])
