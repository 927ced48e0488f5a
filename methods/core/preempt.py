"""Pre-emption and numerical guards shared by every trainer.

SLURM pre-empts or time-limits a job with SIGTERM (and, with ``--signal``, SIGUSR1 beforehand);
Snakemake and ``scancel`` send SIGTERM too. Inside ``handle_preemption()`` those signals only set a
flag. Trainers look at it at each step boundary: they write a checkpoint and raise ``Preempted``,
and the CLI exits with status 143 (128 + SIGTERM) without writing the final output, so the job
counts as failed and a rerun of the same rule resumes from that checkpoint.

SIGKILL cannot be caught: a killed job resumes from its last periodic checkpoint instead.
"""
from __future__ import annotations

import math
import signal
from contextlib import contextmanager
from pathlib import Path

EXIT_CODE = 143
_STATE = {"signal": None}


class Preempted(Exception):
    """A trainer stopped at a step boundary after a termination signal; its checkpoint is written."""


def requested() -> bool:
    return _STATE["signal"] is not None


def reset() -> None:
    _STATE["signal"] = None


@contextmanager
def handle_preemption(signals=(signal.SIGTERM, signal.SIGUSR1)):
    """While active, the given signals set the pre-emption flag instead of killing the process."""
    def on_signal(signum, frame):
        _STATE["signal"] = signum
        print(f"received {signal.Signals(signum).name}: checkpointing at the end of this step", flush=True)

    previous = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def require_finite(where: str, values: dict, hint: str = "") -> None:
    """Stop with a clear error when any value is NaN or infinite."""
    bad = {k: v for k, v in values.items() if not math.isfinite(float(v))}
    if bad:
        raise FloatingPointError(f"{where}: non-finite {bad}" + (f"; {hint}" if hint else ""))


def guard_callbacks():
    """TrainerCallbacks for the transformers/TRL trainers: stop on pre-emption after saving a
    checkpoint, and stop with an error when a logged loss or gradient norm is not finite."""
    from transformers import TrainerCallback

    class PreemptionCallback(TrainerCallback):
        stopped = False

        def on_step_end(self, args, state, control, **kw):
            if requested():
                control.should_save = True
                control.should_training_stop = True
                PreemptionCallback.stopped = True
            return control

    class FiniteLossCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            values = {k: v for k, v in (logs or {}).items() if k in ("loss", "grad_norm") and v is not None}
            require_finite(f"step {state.global_step}", values,
                           f"the last good checkpoint is kept in {args.output_dir} and a rerun resumes from it")

    PreemptionCallback.stopped = False
    return PreemptionCallback(), FiniteLossCallback()


def last_checkpoint(work) -> str | None:
    """The newest HF Trainer checkpoint in the work folder ``work`` (None without one)."""
    from transformers.trainer_utils import get_last_checkpoint

    if Path(work).is_dir():
        return get_last_checkpoint(str(work))
    return None


def run_trainer(trainer, work) -> str | None:
    """``trainer.train()`` resumed from the last checkpoint in ``work`` (if any) with the guards
    above; raises ``Preempted`` when a signal stopped it. Returns the checkpoint it resumed from."""
    pre, fin = guard_callbacks()
    trainer.add_callback(pre)
    trainer.add_callback(fin)
    resumed = last_checkpoint(work)
    trainer.train(resume_from_checkpoint=resumed)
    if pre.stopped:
        raise Preempted(f"stopped at step {trainer.state.global_step}; checkpoint in {work}; rerun to resume")
    return resumed
