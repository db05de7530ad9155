"""Reverse-KL training of the baseline CNF from the action alone (no data).

With q the model density and p = e^{-S} / Z the target,

    KL(q || p) = E_q[log q + S] + log Z,

so the loss L = E_q[log q(phi) + S(phi)] / V = (KL - log Z) / V is bounded below by
-log Z / V, with equality iff q = p. It is estimated on ``batch_size`` fresh draws per step
and differentiated by reparameterization: phi = F_theta(phi0) with phi0 from the fixed prior,
the gradient flowing through every RK4 step (optionally checkpointed per step) and through
log q = log p0(phi0) - int div v. Adam with a constant or warmup + cosine learning rate and
gradient-norm clipping; a step whose loss or gradient is not finite is skipped (counted).

Resume: :meth:`BaselineTrainer.state_dict` stores the model, Adam's moments, the generator
state, the counters and the history as named numpy arrays (no pickle); loading it into a
trainer built with the same arguments continues bit for bit like an uninterrupted run.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rgdist.correct import ess_fraction
from rgdist.flow.baseline.checks import check_pos_float, check_pos_int
from rgdist.flow.baseline.cnf import BaselineCNF
from rgdist.lattice import Phi4Action

__all__ = ["BaselineTrainConfig", "BaselineTrainer"]


@dataclass
class BaselineTrainConfig:
    """``steps`` Adam steps on batches of ``batch_size`` fresh draws, each through
    ``n_steps`` RK4 steps (None: the CNF's own). lr_schedule "constant", or "cosine" from lr
    down to lr_min_ratio * lr over the steps after a linear ``warmup``. ``checkpoint``:
    recompute each RK4 step in the backward pass (memory of one step, ~1.6x the time)."""

    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    lr_min_ratio: float = 0.05
    warmup: int = 0
    grad_clip: float | None = 1.0
    n_steps: int | None = None
    checkpoint: bool = True

    def __post_init__(self):
        self.steps = check_pos_int("steps", self.steps, 0)
        self.batch_size = check_pos_int("batch_size", self.batch_size)
        self.lr = check_pos_float("lr", self.lr)
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', "
                             f"got {self.lr_schedule!r}")
        if not 0 <= float(self.lr_min_ratio) <= 1:
            raise ValueError(f"lr_min_ratio must lie in [0, 1], got {self.lr_min_ratio!r}")
        self.warmup = check_pos_int("warmup", self.warmup, 0)
        if self.grad_clip is not None:
            self.grad_clip = check_pos_float("grad_clip", self.grad_clip)
        if self.n_steps is not None:
            self.n_steps = check_pos_int("n_steps", self.n_steps)
        if not isinstance(self.checkpoint, bool):
            raise ValueError(f"checkpoint must be true or false, got {self.checkpoint!r}")


def _config_bytes(config: BaselineTrainConfig) -> bytes:
    return repr(sorted(asdict(config).items())).encode()


class BaselineTrainer:
    """Reverse-KL training of a :class:`BaselineCNF` against ``action`` (module docstring).

    ``history`` holds, per step, the loss and the batch's Kish ESS/n; ``skipped`` counts the
    steps whose loss or gradient was not finite; ``seconds`` the process CPU time spent.
    """

    def __init__(self, cnf: BaselineCNF, action: Phi4Action,
                 config: BaselineTrainConfig | None = None, *, generator: torch.Generator):
        if not isinstance(cnf, BaselineCNF):
            raise ValueError(f"cnf must be a BaselineCNF, got {type(cnf).__name__}")
        if not isinstance(action, Phi4Action) or action.d != cnf.lattice.d:
            raise ValueError("action must be a rgdist Phi4Action of the lattice's dimension")
        if not isinstance(generator, torch.Generator):
            raise ValueError("generator must be a torch.Generator (seeded)")
        self.cnf, self.action = cnf, action
        self.config = BaselineTrainConfig() if config is None else config
        self.generator = generator
        self.optimizer = torch.optim.Adam(cnf.parameters(), lr=self.config.lr, foreach=False)
        self.step_count = 0
        self.skipped = 0
        self.seconds = 0.0
        self.history = {"loss": [], "ess": []}

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based)."""
        c = self.config
        if c.warmup and step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        if c.lr_schedule == "constant" or c.steps <= c.warmup:
            return c.lr
        frac = min(1.0, (step - c.warmup) / max(1, c.steps - c.warmup))
        lo = c.lr * c.lr_min_ratio
        return lo + 0.5 * (c.lr - lo) * (1 + math.cos(math.pi * frac))

    def step(self) -> dict:
        """One Adam step on a fresh batch; returns {"loss", "ess", "lr"}."""
        c, cnf = self.config, self.cnf
        t0 = time.process_time()
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        phi, log_q = cnf.sample(c.batch_size, self.generator, n_steps=c.n_steps,
                                checkpoint=c.checkpoint)
        log_w = cnf.log_weights(phi, log_q, self.action)
        loss = -log_w.mean() / cnf.lattice.volume
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            ok = all(bool(torch.isfinite(p.grad).all()) for p in cnf.parameters()
                     if p.grad is not None)
        if ok:
            if c.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(cnf.parameters(), c.grad_clip)
            self.optimizer.step()
        else:
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
        lw = log_w.detach()
        ess = ess_fraction(lw) if ok and bool((lw > -math.inf).any()) else float("nan")
        value = float(loss.detach())
        self.step_count += 1
        self.history["loss"].append(value)
        self.history["ess"].append(ess)
        self.seconds += time.process_time() - t0
        return {"loss": value, "ess": ess, "lr": lr}

    def fit(self, steps: int | None = None, *, max_seconds: float | None = None,
            callback=None) -> dict:
        """Train until ``steps`` (default config.steps) steps are done in total, or until
        ``max_seconds`` of process CPU time were spent in this call; returns ``history``."""
        total = self.config.steps if steps is None else check_pos_int("steps", steps, 0)
        start = time.process_time()
        while self.step_count < total:
            info = self.step()
            if callback is not None:
                callback(self.step_count, info)
            if max_seconds is not None and time.process_time() - start >= max_seconds:
                break
        return self.history

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything a resume needs, as named numpy arrays (no pickle)."""
        out = {f"model/{k}": v.detach().cpu().numpy().copy()
               for k, v in self.cnf.state_dict().items()}
        for i, p in enumerate(self.cnf.parameters()):
            for key, val in (self.optimizer.state.get(p) or {}).items():
                out[f"adam/{i}/{key}"] = torch.as_tensor(val).detach().cpu().numpy().copy()
        out["generator"] = self.generator.get_state().numpy().copy()
        out["counters"] = np.array([self.step_count, self.skipped], dtype=np.int64)
        out["seconds"] = np.array([self.seconds], dtype=np.float64)
        out["history/loss"] = np.asarray(self.history["loss"], dtype=np.float64)
        out["history/ess"] = np.asarray(self.history["ess"], dtype=np.float64)
        out["config"] = np.frombuffer(_config_bytes(self.config), dtype=np.uint8).copy()
        return out

    def load_state_dict(self, state: dict) -> "BaselineTrainer":
        """Restore :meth:`state_dict` output into a trainer built with the same arguments."""
        if "config" in state and (bytes(np.asarray(state["config"], dtype=np.uint8))
                                  != _config_bytes(self.config)):
            raise ValueError("state was saved with a different BaselineTrainConfig")
        model = {k[len("model/"):]: torch.from_numpy(np.array(v)) for k, v in state.items()
                 if k.startswith("model/")}
        self.cnf.load_state_dict(model, strict=True)
        self.optimizer.state.clear()
        for i, p in enumerate(self.cnf.parameters()):
            prefix = f"adam/{i}/"
            s = {}
            for k in (k for k in state if k.startswith(prefix)):
                name = k[len(prefix):]
                val = torch.from_numpy(np.array(state[k]))
                s[name] = val if name == "step" else val.to(device=p.device, dtype=p.dtype)
            if s:
                self.optimizer.state[p] = s
        self.generator.set_state(torch.from_numpy(np.array(state["generator"], dtype=np.uint8)))
        self.step_count, self.skipped = (int(x) for x in np.asarray(state["counters"]))
        self.seconds = float(np.asarray(state["seconds"])[0])
        self.history = {"loss": [float(x) for x in state["history/loss"]],
                        "ess": [float(x) for x in state["history/ess"]]}
        return self
