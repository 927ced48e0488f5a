"""What the hand-written trainers (L3M, minimax; CPO for its loop) share: model and optimiser set-up,
resumable state, the task mini-batch and its NLL, sampling from the current policy and scoring
the samples, sequence log-probabilities, the training log, checkpoints and the atomic final save.

Each trainer keeps only its own maths (the barrier multipliers, the dual ascent and KL).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from methods.core.distributed import GradReducer, barrier, init_distributed, phase, split_errors


def sequences(tok, samples: list[dict], ctx: int) -> tuple[list[list[int]], list[int]]:
    """Each sample as it was drawn: its prompt ids exactly as the sampler saw them, then the sampled
    response (+ EOS when the model ended its turn: the stop decision is what a length constraint
    acts on). Returns (sequences, response starts). The sampler left room for ``max_new_tokens``
    (``fit_to_context``), so nothing is cut here; a sequence longer than ``ctx`` is a bug."""
    seqs, starts = [], []
    for s in samples:
        seq = s["prompt_ids"] + s["response_ids"] + ([tok.eos_token_id] if s["finished"] else [])
        if len(seq) > ctx:
            raise RuntimeError(f"a sampled sequence of {len(seq)} tokens exceeds the context {ctx}: the sampler "
                               f"and the scorer disagree on truncation")
        seqs.append(seq)
        starts.append(len(s["prompt_ids"]))
    return seqs, starts


def seq_logprob(model, seqs, starts, pad_id, length_normalize: bool, device, temperature: float = 1.0) -> torch.Tensor:
    """Sum (or mean, ``length_normalize``) of the target tokens' log-probabilities per sequence."""
    from methods.core.logprobs import sequence_logprob

    return sequence_logprob(model, seqs, starts, pad_id, device, mean=length_normalize, temperature=temperature)


def sample_logprob(model, tok, samples: list[dict], ctx: int, device, *, mean: bool = False,
                   temperature: float = 1.0) -> torch.Tensor:
    """log pi_T(y|x) of each sample (summed over the response tokens, or their ``mean``) under
    ``model`` at the sampling temperature T, behind the prompt ids it was drawn from."""
    seqs, starts = sequences(tok, samples, ctx)
    return seq_logprob(model, seqs, starts, tok.pad_token_id, mean, device, temperature)


def clip_and_get(params, max_norm: float) -> tuple[list[torch.Tensor], float]:
    """Clip the current gradients to ``max_norm``; return copies of them and the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params], norm


class OnPolicyRun:
    """One resumable run of ``method``: settings from ``cfg["onpolicy"]``; the optimiser's learning rate
    and warmup from the caller (and weight decay and scheduler when it passes them: CPO).

    ``step_hooks``: callables ``hook(run)`` called at the end of every step (the speed benchmark
    times steps with them); ``run.stats`` holds the step's token counts and sampling time."""

    step_hooks: list = []

    def __init__(self, cfg: dict, method: str, init_dir: str, out_dir: str, data_dir: str, *, steps: int,
                 lr: float, warmup: float, reward_names: list[str], extra_state: dict,
                 weight_decay: float | None = None, scheduler: str | None = None):
        from transformers import get_scheduler

        from methods.core.generation import model_context
        from methods.core.io import read_jsonl
        from methods.core.models import load_model, prepare_work_dir
        from methods.core.record import seed_everything, tracks
        from methods.core.rewards import build_reward

        self.t0 = time.time()
        self.cfg, self.method, self.init_dir, self.steps = cfg, method, str(init_dir), steps
        self.s = cfg["onpolicy"]  # sampling, task-batch and optimiser settings shared by the on-policy trainers
        seed_everything(cfg["seed"])
        self.device = cfg["hardware"]["device"]
        self.world, self.rank, local = init_distributed(self.device)
        if self.world > 1:
            errs = split_errors(self.s, self.world, "onpolicy", f"{self.world} processes")
            if errs:
                raise ValueError("; ".join(errs))
            if self.device == "cuda":
                self.device = f"cuda:{local}"
        self.out_dir = Path(out_dir)
        self.work = prepare_work_dir(Path(str(out_dir) + ".work"), cfg)
        self.model, self.tok = load_model(init_dir, device=self.device, for_training=True)
        ck = torch.load(self.work / "state.pt", weights_only=False) if (self.work / "state.pt").exists() else None
        if ck is not None and "model" in ck:  # a full checkpoint: loaded before any sharding
            self.model.load_state_dict(ck["model"])
        hw = cfg["hardware"]
        if hw["gradient_checkpointing"] and self.device != "cpu":
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.fsdp = bool(hw["fsdp"]) and self.world > 1
        if self.fsdp:
            from methods.core.fsdp import shard

            shard(self.model, hw)
        self.rewards = {n: build_reward(n, cfg["rewards"][n], tokenizer=self.tok, device=self.device, cfg=cfg)
                        for n in dict.fromkeys(reward_names)}
        self.rows = read_jsonl(Path(data_dir) / "train.jsonl")
        # samples: the model's context (the sampler reserves max_new_tokens, as in evaluation);
        # task pairs: at most onpolicy.max_length tokens (both cut by fit_to_context)
        self.ctx = model_context(self.model)
        self.task_ctx = min(self.ctx, self.s["max_length"])
        self.gen = {"max_new_tokens": self.s["max_new_tokens"], "do_sample": True, "temperature": self.s["temperature"],
                    "top_p": 1.0, "top_k": 0, "batch_size": self.s["sample_prompts"] * self.s["samples_per_prompt"],
                    "cache": cfg["generation"]["cache"], "backend": cfg["generation"]["backend"]}
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # replicated weights on several processes: bucketed gradient all-reduce overlapped with backward
        self.reducer = GradReducer(self.params, self.world, hw["grad_bucket_mb"]) if self.world > 1 and not self.fsdp else None
        cuda = str(self.device).startswith("cuda")
        # on CUDA: the fused AdamW kernel, and bf16 autocast (hardware.bf16; FSDP has its own policy)
        # the optimiser: the caller's settings (CPO's own section), else onpolicy's (L3M, MM)
        weight_decay = self.s["weight_decay"] if weight_decay is None else weight_decay
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay,
                                     fused=(cuda and not self.fsdp) or None)
        self.bf16 = cuda and bool(hw["bf16"]) and not self.fsdp
        warm = int(warmup * steps) if warmup < 1 else int(warmup)
        self.sched = get_scheduler(scheduler or self.s["scheduler"], self.opt, num_warmup_steps=warm, num_training_steps=steps)
        self.state = {"step": 0, "order": None, **extra_state}
        self.rng = random.Random(cfg["seed"])
        if ck is not None:  # resume (full weights are loaded above, before any sharding)
            if "shards" in ck:  # each process reads its shards of the weights and AdamW state
                from methods.core.fsdp import load_sharded

                if not self.fsdp:
                    raise ValueError(f"{self.work}: the checkpoint is sharded over {ck.get('world')} FSDP processes; "
                                     f"resume with hardware.fsdp: true, or delete {self.work} to start again")
                load_sharded(self.model, self.opt, self.work / ck["shards"])
            elif self.fsdp:
                from methods.core.fsdp import load_optimizer

                load_optimizer(self.model, self.opt, ck["opt"])
            else:
                self.opt.load_state_dict(ck["opt"])
            self.sched.load_state_dict(ck["sched"])
            self.state = ck["state"]
            self.rng.setstate(ck["py_rng"])
            torch.set_rng_state(ck["torch_rng"])
            print(f"{method}: resuming from step {self.state['step']} (checkpoint in {self.work})", flush=True)
        if self.state["order"] is None:
            self.state["order"] = list(range(len(self.rows)))
            self.rng.shuffle(self.state["order"])
        self.log_path = self.work / "train_log.jsonl"
        self.eval_log_path = self.work / "eval_log.jsonl"
        for path in (self.log_path, self.eval_log_path):  # resumed: drop rows logged after the checkpoint
            if path.exists() and self.rank == 0:
                path.write_text("".join(x for x in open(path) if json.loads(x)["step"] < self.state["step"]))
        # logging.report_to: tensorboard: the scalars of every logged step
        self.tb = _tensorboard(self.work / "tensorboard") if self.rank == 0 and tracks(cfg) else None
        self.stats = {}
        # held-out evaluation (onpolicy.eval_every); the run's clock leaves out the evaluation's own time
        self.eval_rows = (read_jsonl(Path(data_dir) / f"{self.s['eval_split']}.jsonl")[: self.s["eval_prompts"]]
                          if self.s["eval_every"] else [])
        self.eval_s, self.clock0, self._evaluated = 0.0, self.state.get("elapsed_s", 0.0), None

    # -- one step's pieces ----------------------------------------------------------------------
    def batch(self, step: int) -> list[dict]:
        bs = self.s["batch_size"]
        i0 = (step * bs) % len(self.rows)
        return [self.rows[self.state["order"][(i0 + j) % len(self.rows)]] for j in range(bs)]

    def encode_task(self, rows: list[dict]) -> tuple[list[list[int]], list[int]]:
        """Task pairs as (sequences, response starts), cut to ``onpolicy.max_length`` by fit_to_context."""
        from methods.core.models import encode_target

        return encode_target(self.tok, rows, "response", self.task_ctx)

    def task_loss(self, batch: list[dict]) -> torch.Tensor:
        """Task NLL of the mini-batch: length-normalised per response, or per token over the batch."""
        k = len(batch) // self.world  # this process's share of the batch (all of it on one process)
        seqs, starts = self.encode_task(batch[self.rank * k:(self.rank + 1) * k])
        self.model.train()
        self.stats["task_tokens"] = sum(map(len, seqs))
        with self.autocast():
            lp = seq_logprob(self.model, seqs, starts, self.tok.pad_token_id, self.s["length_normalize"], self.device)
        if self.s["length_normalize"]:
            return -lp.mean()
        tokens = self.global_sum(torch.tensor(float(sum(len(q) - st for q, st in zip(seqs, starts)))))
        return -lp.sum() / tokens * self.world  # x world: gradients are averaged over the processes

    def sample_and_score(self, batch: list[dict], step: int):
        """Samples of the current policy for the first ``sample_prompts`` prompts of the batch
        (``samples_per_prompt`` each, adjacent) and every reward on them."""
        from methods.core.generation import sample

        prompts = [r["prompt"] for r in batch[: self.s["sample_prompts"]] for _ in range(self.s["samples_per_prompt"])]
        n, k = len(prompts), len(prompts) // self.world  # this process samples prompts k*rank .. k*(rank+1)
        prompts = prompts[self.rank * k:(self.rank + 1) * k]
        t0 = time.perf_counter()
        with self.autocast(), self.gathered():
            samples = sample(self.model, self.tok, prompts, self.gen, seed=self.cfg["seed"] * 100003 + step,
                             progress=False, rows=(self.rank * k, n), context=self.ctx)
        self.stats.update(sample_s=time.perf_counter() - t0, sampled_tokens=sum(x["n_tokens"] for x in samples))
        texts, ids = [x["response"] for x in samples], [x["response_ids"] for x in samples]
        try:
            r_by = {n: rw(prompts, texts, ids).to(self.device) for n, rw in self.rewards.items()}
        except FloatingPointError as e:  # a NaN/inf reward names its sample; say what is kept
            raise FloatingPointError(f"{self.method} step {step}: {e}; the last checkpoint is kept in {self.work} "
                                     f"and a rerun resumes from it") from e
        return prompts, samples, r_by

    def sample_logprob(self, model, samples) -> torch.Tensor:
        """log pi_T(y|x) of each sample under ``model``, at the sampling temperature T and behind the
        prompt ids it was drawn from: summed over the response tokens (onpolicy.pg_estimator: sequence)
        or their mean (length_normalized)."""
        self.stats["sample_train_tokens"] = sum(len(x["prompt_ids"]) + len(x["response_ids"]) + int(x["finished"]) for x in samples)
        with self.autocast():
            return sample_logprob(model, self.tok, samples, self.ctx, self.device,
                                  mean=self.s["pg_estimator"] == "length_normalized", temperature=self.s["temperature"])

    def gathered(self):
        """With FSDP and ``hardware.fsdp_sampling: gather``: the layers stay gathered through the block
        (methods/core/fsdp.py ``gathered``: one all-gather per layer per sampling phase)."""
        from contextlib import nullcontext

        if self.fsdp and self.cfg["hardware"]["fsdp_sampling"] == "gather":
            from methods.core.fsdp import gathered

            return gathered(self.model)
        return nullcontext()

    def autocast(self):
        """bf16 autocast for forward passes on CUDA with hardware.bf16 (weights and AdamW stay fp32)."""
        from contextlib import nullcontext

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()

    # -- held-out evaluation during training ---------------------------------------------------
    def elapsed(self) -> float:
        """Wall-clock of this run so far (set-up and training steps, across resumes), without the
        time spent in held-out evaluations."""
        return self.clock0 + time.time() - self.t0 - self.eval_s

    def evaluate_heldout(self, cons: list) -> None:
        """Before step 0, every ``eval_every`` steps and after the last step (call it at the top of
        each step and once after the loop): sample the held-out prompts (``eval_split``) with the
        evaluation's generation settings (fixed seed, the training RNG untouched), and log the
        constraint estimates C_i (<= 0: met) with their standard errors, mean rewards and task NLL
        (nats/token, mean over responses) with the run's wall-clock to ``eval_log.jsonl``. Rank 0
        evaluates and the others wait (with FSDP every process evaluates in step)."""
        every, step = self.s["eval_every"], self.state["step"]
        if not every or step == self._evaluated or not (step % every == 0 or step >= self.steps):
            return
        self._evaluated, elapsed, t = step, self.elapsed(), time.time()
        # sharded (FSDP) forwards are collectives: then every process evaluates the same prompts
        res = self._heldout(cons) if self.rank == 0 or self.fsdp else None
        if self.rank == 0:
            rec = {"step": step, "elapsed_s": round(elapsed, 3), **res}
            rec["feasible"] = all(rec[f"C_heldout[{c.name}]"] <= 0 for c in cons)
            with open(self.eval_log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{self.method} held-out at step {step} ({elapsed:.0f} s): "
                  + ", ".join(f"{k}={v:.3f}" for k, v in rec.items() if k.startswith(("C_heldout", "heldout_nll"))),
                  flush=True)
        barrier()
        self.eval_s += time.time() - t

    def _heldout(self, cons: list) -> dict:
        from methods.core.generation import sample
        from methods.core.logprobs import response_nll

        prompts = [r["prompt"] for r in self.eval_rows]
        cuda = str(self.device).startswith("cuda")
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []), torch.no_grad(), \
                self.gathered():
            with self.autocast():
                samples = sample(self.model, self.tok, prompts, self.cfg["generation"], seed=self.cfg["seed"],
                                 progress=False)
            texts, ids = [x["response"] for x in samples], [x["response_ids"] for x in samples]
            r_by = {n: rw(prompts, texts, ids).float().cpu() for n, rw in self.rewards.items()}
            was_training = self.model.training
            with self.autocast():  # task perplexity exactly as the evaluation rule computes it
                nll = response_nll(self.model, self.tok, self.eval_rows, ctx=self.ctx,
                                   batch_size=self.s["batch_size"], progress=False)
            self.model.train(was_training)
        rec = {"heldout_nll": sum(nll) / len(nll),
               "mean_length": sum(x["n_tokens"] for x in samples) / len(samples)}
        for con in cons:
            g = con.value(r_by[con.reward])
            rec[f"C_heldout[{con.name}]"] = g.mean().item()
            rec[f"C_heldout_se[{con.name}]"] = (g.std() / len(g) ** 0.5).item() if len(g) > 1 else 0.0
        for n, r in r_by.items():
            rec[f"reward_heldout[{n}]"] = r.mean().item()
        return rec

    # -- across processes (identity on one) ----------------------------------------------------
    def global_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over processes of a per-process mean (equal shares): the mean over the global batch."""
        return t if self.world == 1 else self.global_sum(t) / self.world

    def global_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        import torch.distributed as dist

        t = t.detach().clone().to(self.device)
        dist.all_reduce(t)
        return t

    def sync_grads(self) -> None:
        """Average the gradients over processes (what DDP does), before any clipping: after every
        backward pass (methods/core/distributed.py ``GradReducer``: buckets launched during the
        backward, waited here). With FSDP the backward pass has already reduce-scattered them."""
        if self.reducer is not None:
            self.reducer.wait()

    def check_finite(self, step: int, values: dict) -> None:
        from methods.core.preempt import require_finite

        require_finite(f"{self.method} step {step}", values,
                       f"the last checkpoint is kept in {self.work} and a rerun resumes from it")

    def log(self, rec: dict) -> None:
        if self.rank > 0:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for key, val in rec.items():
                if key != "step":
                    self.tb.add_scalar(key, val, rec["step"])

    def should_log(self, step: int, every: int) -> bool:
        return step % every == 0 or step + 1 == self.steps

    def maybe_checkpoint(self, every: int) -> None:
        """At the end of a step: a checkpoint every ``every`` steps, and on pre-emption (SIGTERM) a
        checkpoint and then ``Preempted``."""
        from methods.core import preempt

        for hook in self.step_hooks:
            hook(self)
        flag = preempt.requested()
        if self.world > 1:  # every process stops at the same step if any was signalled
            flag = bool(self.global_sum(torch.tensor(float(flag))).item() > 0)
        stop = flag and self.state["step"] < self.steps
        if (self.state["step"] % every == 0 and self.state["step"] < self.steps) or stop:
            self.save_checkpoint()
        if stop:
            raise preempt.Preempted(f"{self.method} stopped after step {self.state['step']}; checkpoint in "
                                    f"{self.work}; rerun to resume")

    def save_checkpoint(self) -> None:
        """state.pt: the scheduler, the trainer's state and the RNGs, with the full weights and AdamW
        state (one process; FSDP with ``hardware.checkpoint: full``: gathered on rank 0), or with the
        name of the folder the FSDP processes wrote their shards into (``sharded``: shards/step<N>,
        written before state.pt points to it; older folders are removed after)."""
        import shutil

        from methods.core.io import atomic_path

        with phase("checkpoint"):
            weights = {}
            if self.fsdp and self.cfg["hardware"]["checkpoint"] == "sharded":
                from methods.core.fsdp import save_sharded

                name = f"shards/step{self.state['step']}"
                save_sharded(self.model, self.opt, self.work / name)
                barrier()  # every shard is on disk before state.pt names the folder
                weights = {"shards": name, "world": self.world}
            elif self.fsdp:  # gather the full state (a collective), rank 0 writes it
                from methods.core.fsdp import full_state

                model_sd, opt_sd = full_state(self.model, self.opt)
                weights = {"model": model_sd, "opt": opt_sd}
            elif self.rank == 0:
                weights = {"model": self.model.state_dict(), "opt": self.opt.state_dict()}
            if self.rank > 0:
                return
            self.state["elapsed_s"] = self.elapsed()
            with atomic_path(self.work / "state.pt") as tmp:
                torch.save({**weights, "sched": self.sched.state_dict(), "state": self.state,
                            "py_rng": self.rng.getstate(), "torch_rng": torch.get_rng_state()}, tmp)
            for old in (self.work / "shards").glob("step*") if (self.work / "shards").exists() else []:
                if f"shards/{old.name}" != weights.get("shards"):
                    shutil.rmtree(old, ignore_errors=True)

    def flag_feasible(self, estimates: dict) -> bool:
        """Whether every constraint estimate is met (<= 0) at the end. An infeasible run is not an
        error: it finishes, says so here and is flagged ``feasible: false`` in its run record."""
        unmet = {k: round(v, 4) for k, v in estimates.items() if v > 0}
        if unmet:
            print(f"{self.method}: constraints not met at the end of training {unmet} (> 0 is violated); "
                  f"the run is flagged feasible: false")
        return not unmet

    def finish(self, **record) -> dict:
        """Write the model, tokenizer, run record and training log into ``out_dir`` atomically."""
        from methods.core.models import save_trained
        from methods.core.record import run_record

        if self.tb is not None:
            self.tb.close()
        log = [json.loads(x) for x in open(self.log_path)] if self.log_path.exists() else []
        evals = [json.loads(x) for x in open(self.eval_log_path)] if self.eval_log_path.exists() else []
        if evals:
            record["heldout"] = {"prompts": len(self.eval_rows), "every": self.s["eval_every"], **time_to_feasible(evals),
                                 "final": evals[-1]}
        rec = run_record(self.cfg, self.cfg["seed"], started=self.t0, method=self.method, init=self.init_dir,
                         steps=self.state["step"], **record)
        weights = None
        if self.fsdp:
            from methods.core.fsdp import full_state

            weights = full_state(self.model)[0]
        return save_trained(self.model, self.tok, self.out_dir, rec, self.work, state_dict=weights,
                            jsonl_files={"train_log.jsonl": log, **({"eval_log.jsonl": evals} if evals else {})})


def time_to_feasible(evals: list[dict], offset_s: float = 0.0) -> dict:
    """From held-out evaluations (``step``, ``elapsed_s``, ``feasible``, in order): when every
    constraint was first met (``first_*``) and from when on it stayed met through the last
    evaluation (``stays_*``); None where never. ``offset_s`` adds the time of earlier stages
    (SFT before MM)."""
    first = next((e for e in evals if e["feasible"]), None)
    stays = None
    for e in reversed(evals):
        if not e["feasible"]:
            break
        stays = e
    out = {}
    for name, e in (("first", first), ("stays", stays)):
        out[f"{name}_feasible_step"] = None if e is None else e["step"]
        out[f"{name}_feasible_s"] = None if e is None else round(e["elapsed_s"] + offset_s, 3)
    return out


def _tensorboard(path: Path):
    """A TensorBoard writer (tensorboard is pinned in requirements.txt)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))
