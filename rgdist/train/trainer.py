"""Trainer: Adam on the DSM loss with EMA weights, gradient clipping, a NaN guard, callbacks,
and a state that resumes bit for bit.

Step k (0-based, ``trainer.step`` = number of completed steps):
    lr_k = lr * warm_k * sched_k * lr_factor,  warm_k = min(1, (k + 1)/warmup),
    sched_k = 1 (constant) or 1/2 (1 + cos(pi min(1, (k - warmup)/(steps - warmup)))) (cosine)
    phi0 = data.sample(batch_size, generator); loss = dsm_loss(...); backward;
    clip the global gradient norm to grad_clip (0 = no clipping);
    if loss and gradient norm are finite: Adam step, EMA  e <- d_k e + (1 - d_k) theta,
    d_k = min(ema_decay, (1 + k)/(10 + k)).
All randomness (minibatch, sign flips, t, forward noise) comes from the one ``generator``, so
a run is deterministic, and ``state_dict()`` holds everything needed to continue bit for bit.

NaN guard (nan_policy="rollback"): before every update the current (known good: it just gave
a finite loss and gradient) model, EMA, optimizer state and step counter are snapshotted in
memory.
If a step gives a non-finite loss or gradient norm, the update is skipped, the last snapshot is
restored (so parameters corrupted by the previous update are undone), ``lr_factor`` is halved
(permanently, it is part of the state), and training continues with fresh random draws (the
generator is not rolled back, so the same bad draw is not repeated). More than
``max_rollbacks`` consecutive rollbacks raise FloatingPointError. nan_policy="raise" raises at
the first non-finite step.

AMP: amp="bf16" runs the model forward under torch.autocast(bfloat16) (the loss, FFTs, stays
in the data dtype); it needs a float32 model, a float64 one is rejected. tf32=True enables
TF32 matmuls/convolutions on CUDA (process-global). Bitwise determinism holds on CPU; on CUDA
it also needs torch.use_deterministic_algorithms(True).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from rgdist.catalog import KL_GRIDS, KL_INTEGRATORS, LR_SCHEDULES, MAX_KL_STEPS, TRAIN_DEFAULTS
from rgdist.checks import check_positive_int as _int
from rgdist.models.registry import load_named_arrays, named_arrays, unwrap
from rgdist.seeding import generator_state, set_generator_state
from rgdist.train.callbacks import Callback
from rgdist.train.dsm import check_t_sampler, check_weighting, dsm_loss
from rgdist.train.objectives import (check_objective, check_reverse_kl_model,
                                     kish_ess_fraction, reverse_kl_loss)

AMP_MODES = ("off", "bf16")
NAN_POLICIES = ("rollback", "raise")


def _float(name, v, lo, hi=math.inf, lo_open=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{name} must be a finite number in {rng}, got {v!r}")


_T = TRAIN_DEFAULTS  # defaults shared with the campaign's train section (rgdist.catalog)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _T["steps"]
    batch_size: int = _T["batch_size"]
    lr: float = _T["lr"]
    lr_schedule: str = _T["lr_schedule"]
    warmup: int = _T["warmup"]
    ema_decay: float = _T["ema_decay"]
    grad_clip: float = _T["grad_clip"]
    weighting: str = _T["weighting"]
    t_sampler: str = _T["t_sampler"]
    t_min: float | None = None
    max_seconds: float | None = _T["max_seconds"]
    amp: str = "off"
    tf32: bool = False
    checkpoint_every: int = 0
    log_every: int = 100
    nan_policy: str = "rollback"
    max_rollbacks: int = 8
    objective: str = _T["objective"]
    kl_steps: int = _T["kl_steps"]
    kl_batch: int | None = _T["kl_batch"]
    kl_grid: str = _T["kl_grid"]
    kl_integrator: str = _T["kl_integrator"]
    kl_checkpoint: bool = True
    path_weight: float = _T["path_weight"]
    zero_mode_weight: float = _T["zero_mode_weight"]

    def __post_init__(self):
        _int("steps", self.steps, 0)
        _int("batch_size", self.batch_size, 1)
        _float("lr", self.lr, 0, lo_open=True)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        _int("warmup", self.warmup, 0)
        _float("ema_decay", self.ema_decay, 0.0, 1.0)
        if self.ema_decay == 1.0:
            raise ValueError("ema_decay must be in [0, 1), got 1.0")
        _float("grad_clip", self.grad_clip, 0.0)
        check_weighting(self.weighting)
        check_t_sampler(self.t_sampler)
        if self.t_min is not None:
            _float("t_min", self.t_min, 0.0, lo_open=True)
        if self.max_seconds is not None:
            _float("max_seconds", self.max_seconds, 0.0, lo_open=True)
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if not isinstance(self.tf32, bool):
            raise ValueError(f"tf32 must be True or False, got {self.tf32!r}")
        _int("checkpoint_every", self.checkpoint_every, 0)
        _int("log_every", self.log_every, 0)
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {self.nan_policy!r}")
        _int("max_rollbacks", self.max_rollbacks, 0)
        check_objective(self.objective)
        _int("kl_steps", self.kl_steps, 1)
        if self.kl_steps > MAX_KL_STEPS:
            raise ValueError(f"kl_steps must be an integer in [1, {MAX_KL_STEPS}], got "
                             f"{self.kl_steps!r}")
        if self.kl_batch is not None:
            _int("kl_batch", self.kl_batch, 1)
        if self.kl_grid not in KL_GRIDS:
            raise ValueError(f"kl_grid must be one of {KL_GRIDS}, got {self.kl_grid!r}")
        if self.kl_integrator not in KL_INTEGRATORS:
            raise ValueError(f"kl_integrator must be one of {KL_INTEGRATORS}, got "
                             f"{self.kl_integrator!r}")
        if not isinstance(self.kl_checkpoint, bool):
            raise ValueError(f"kl_checkpoint must be True or False, got {self.kl_checkpoint!r}")
        _float("path_weight", self.path_weight, 0.0)
        _float("zero_mode_weight", self.zero_mode_weight, 0.0, lo_open=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a plain dict; unknown keys are rejected with the list of allowed ones."""
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ValueError(f"unknown train option(s) {unknown}; allowed: {allowed}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def _to_np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().copy()


class Trainer:
    """Training of ``model`` for ``scheme`` by ``config.objective``: DSM on minibatches of
    ``data_source``, reverse KL against ``action`` (no data: ``data_source`` may be None), or
    the path-aware objective (both; see rgdist.train.objectives). ``prior_G``: the reference
    spectrum of the flow's Gaussian prior for the reverse-KL term (needed when the scheme
    leaves a mode un-noised; use the same one when evaluating the sampler)."""

    def __init__(self, model, scheme, data_source, config: TrainConfig,
                 generator: torch.Generator, *, callbacks=(), action=None, prior_G=None):
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if config.objective != "dsm":
            if action is None or not callable(action):
                raise ValueError(f"objective {config.objective!r} needs action= (the lattice "
                                 "action S(phi), e.g. rgdist.lattice.Phi4Action)")
            check_reverse_kl_model(model, scheme)
        if config.objective != "reverse_kl" and not callable(getattr(data_source, "sample", None)):
            raise ValueError("data_source must provide sample(batch, generator)")
        self.action, self.prior_G = action, prior_G
        self.last_ess = float("nan")
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ValueError(f"callbacks must be Callback instances, got {type(cb).__name__}")
        self.model, self.scheme, self.data = model, scheme, data_source
        self.config, self.generator, self.callbacks = config, generator, callbacks
        base = unwrap(model)
        self.names = [n for n, p in base.named_parameters() if p.requires_grad]
        self.params = [p for p in base.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("model has no trainable parameters")
        self.device = self.params[0].device
        if config.amp == "bf16" and self.params[0].dtype != torch.float32:
            raise ValueError(f"amp='bf16' needs a float32 model (dtype='float32'), the model is "
                             f"{self.params[0].dtype}: autocast leaves float64 computations alone")
        if generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device}, the model on {self.device}")
        if config.tf32 and self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr)
        self.ema = [p.detach().clone() for p in self.params]
        self.step = 0
        self.lr_factor = 1.0
        self.n_rollbacks = 0
        self.loss_history: list[float] = []
        self.last_grad_norm = float("nan")
        self._consecutive_rollbacks = 0
        self._snapshot = None
        self._stop = False
        self._clock_start: float | None = None

    # ------------------------------------------------------------------ schedule
    def lr_at(self, k: int) -> float:
        """Learning rate of step k (0-based), including the NaN-guard factor."""
        cfg = self.config
        warm = min(1.0, (k + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
        sched = 1.0
        if cfg.lr_schedule == "cosine":
            span = max(1, cfg.steps - cfg.warmup)
            progress = min(1.0, max(0.0, (k - cfg.warmup) / span))
            sched = 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.lr * warm * sched * self.lr_factor

    def ema_decay_at(self, k: int) -> float:
        """EMA decay used after step k: min(ema_decay, (1 + k)/(10 + k)) (short warm-up, so
        the average forgets the random initialization in short runs)."""
        return min(self.config.ema_decay, (1 + k) / (10 + k))

    # ------------------------------------------------------------------ one step
    def _score_fn(self, phi, t):
        if self.config.amp == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self.model(phi, t)
        return self.model(phi, t)

    def kl_times(self) -> torch.Tensor:
        """The ODE grid of the reverse-KL term."""
        cfg = self.config
        return self.scheme.time_grid(cfg.kl_steps, kind=cfg.kl_grid, t_min=cfg.t_min)

    def compute_loss(self, phi0: torch.Tensor | None) -> torch.Tensor:
        cfg = self.config
        loss = None
        if cfg.objective in ("reverse_kl", "path"):
            loss, log_w = reverse_kl_loss(
                unwrap(self.model), self.scheme, self.action, cfg.kl_batch or cfg.batch_size,
                self.generator, times=self.kl_times(), prior_G=self.prior_G,
                integrator=cfg.kl_integrator, checkpoint=cfg.kl_checkpoint)
            self.last_ess = kish_ess_fraction(log_w)
        if cfg.objective in ("dsm", "path"):
            dsm = dsm_loss(self._score_fn, self.scheme, phi0, self.generator,
                           weighting=cfg.weighting, t_sampler=cfg.t_sampler, t_min=cfg.t_min,
                           zero_mode_weight=cfg.zero_mode_weight)
            loss = dsm if loss is None else loss + cfg.path_weight * dsm
        return loss

    def out_of_time(self) -> bool:
        """True once ``max_seconds`` of wall-clock time have passed since the first
        :meth:`train_step` of this Trainer object (a resumed run gets a fresh budget)."""
        if self.config.max_seconds is None or self._clock_start is None:
            return False
        return time.monotonic() - self._clock_start > self.config.max_seconds

    def train_step(self) -> float | None:
        """One optimizer step; returns the loss, or None if the NaN guard rolled back
        (then ``self.step`` went back to the restored step: drive loops by ``self.step``)."""
        cfg = self.config
        self._start_step()
        phi0 = None
        if cfg.objective != "reverse_kl":
            phi0 = self.data.sample(cfg.batch_size, self.generator).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.compute_loss(phi0)
        loss.backward()
        return self._finish_step(float(loss.detach()))

    def _start_step(self) -> None:  # the budget clock and the step's learning rate
        if self._clock_start is None:
            self._clock_start = time.monotonic()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _finish_step(self, loss_value: float) -> float | None:
        """Gradients in place: clip, NaN guard, Adam, EMA, counters; the loss or None."""
        cfg = self.config
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        self.last_grad_norm = grad_norm
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            self._nonfinite(f"non-finite {what}")
            return None
        self._take_snapshot()
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        self.loss_history.append(loss_value)
        self._consecutive_rollbacks = 0
        return loss_value

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.ema_decay_at(self.step)
        torch._foreach_mul_(self.ema, d)
        torch._foreach_add_(self.ema, [p.detach() for p in self.params], alpha=1 - d)

    # ------------------------------------------------------------------ NaN guard
    @torch.no_grad()
    def _take_snapshot(self) -> None:
        self._snapshot = {
            "params": [p.detach().clone() for p in self.params],
            "ema": [e.clone() for e in self.ema],
            "optim": copy.deepcopy(self.optimizer.state_dict()),
            "step": self.step,
            "n_losses": len(self.loss_history),
        }

    @torch.no_grad()
    def _nonfinite(self, reason: str) -> None:
        step = self.step
        if self.config.nan_policy == "raise":
            raise FloatingPointError(f"{reason} at step {step} (nan_policy='raise')")
        self._consecutive_rollbacks += 1
        if self._consecutive_rollbacks > self.config.max_rollbacks:
            raise FloatingPointError(
                f"{reason} at step {step}: more than max_rollbacks = "
                f"{self.config.max_rollbacks} consecutive rollbacks")
        self.optimizer.zero_grad(set_to_none=True)
        snap = self._snapshot
        if snap is not None:
            for p, v in zip(self.params, snap["params"]):
                p.copy_(v)
            for e, v in zip(self.ema, snap["ema"]):
                e.copy_(v)
            self.optimizer.load_state_dict(copy.deepcopy(snap["optim"]))
            self.step = snap["step"]
            del self.loss_history[snap["n_losses"]:]
        self.lr_factor *= 0.5
        self.n_rollbacks += 1
        for cb in self.callbacks:
            cb.on_rollback(self, step, reason)

    # ------------------------------------------------------------------ loop
    def request_stop(self) -> None:
        """End :meth:`fit` after the current step (e.g. on a pre-emption signal)."""
        self._stop = True

    def fit(self, until: int | None = None, *, check_time: bool = True) -> str:
        """Train until ``step == until`` (default config.steps), the time budget or a stop.

        ``check_time=False`` leaves the time budget to the caller (a campaign stage agrees on
        it over its ranks after each step, so every rank stops at the same step).
        Returns the reason: "done", "time" or "stopped"."""
        cfg = self.config
        until = cfg.steps if until is None else until
        _int("until", until, 0)
        self._stop = False
        if self._clock_start is None:
            self._clock_start = time.monotonic()
        t_log, window = time.monotonic(), []
        for cb in self.callbacks:
            cb.on_train_start(self)
        reason = "done"
        while self.step < until:
            if self._stop:
                reason = "stopped"
                break
            if check_time and self.out_of_time():
                reason = "time"
                break
            loss = self.train_step()
            if loss is None:
                continue
            window.append(loss)
            for cb in self.callbacks:
                cb.on_step_end(self, self.step, loss)
            if cfg.log_every and self.step % cfg.log_every == 0:
                now = time.monotonic()
                stats = {"loss": float(np.mean(window)), "lr": self.lr_at(self.step - 1),
                         "grad_norm": self.last_grad_norm,
                         "steps_per_s": len(window) / max(now - t_log, 1e-12)}
                for cb in self.callbacks:
                    cb.on_log(self, self.step, stats)
                t_log, window = now, []
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                for cb in self.callbacks:
                    cb.on_checkpoint(self, self.step)
        if self._stop and reason == "done" and self.step < until:
            reason = "stopped"
        for cb in self.callbacks:
            cb.on_train_end(self, reason)
        return reason

    # ------------------------------------------------------------------ EMA
    def ema_arrays(self) -> dict[str, np.ndarray]:
        """The model's named arrays with the EMA parameters in place of the raw ones."""
        out = named_arrays(self.model)
        for name, e in zip(self.names, self.ema):
            out[name] = _to_np(e)
        return out

    def ema_model(self):
        """A copy of the (unwrapped) model carrying the EMA weights, in eval mode."""
        model = copy.deepcopy(unwrap(self.model))
        load_named_arrays(model, self.ema_arrays())
        return model.eval()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Model, EMA, Adam state, generator, counters, loss history, data-source state."""
        d = {f"model/{k}": v for k, v in named_arrays(self.model).items()}
        d.update({f"ema/{n}": _to_np(e) for n, e in zip(self.names, self.ema)})
        opt_state = self.optimizer.state_dict()["state"]
        for i, name in enumerate(self.names):
            for key, value in opt_state.get(i, {}).items():
                d[f"optim/{name}/{key}"] = _to_np(torch.as_tensor(value))
        d["generator"] = generator_state(self.generator)
        d["step"] = np.asarray(self.step, dtype=np.int64)
        d["lr_factor"] = np.asarray(self.lr_factor, dtype=np.float64)
        d["n_rollbacks"] = np.asarray(self.n_rollbacks, dtype=np.int64)
        d["loss_history"] = np.asarray(self.loss_history, dtype=np.float64)
        if self.data is not None and hasattr(self.data, "state_dict"):
            d.update({f"data/{k}": v for k, v in self.data.state_dict().items()})
        return d

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict` output (the model must have been built identically)."""
        for key in ("generator", "step", "lr_factor", "n_rollbacks", "loss_history"):
            if key not in d:
                raise ValueError(f"trainer state lacks {key!r}")
        load_named_arrays(self.model, {k[6:]: v for k, v in d.items() if k.startswith("model/")})
        with torch.no_grad():
            for name, e in zip(self.names, self.ema):
                key = f"ema/{name}"
                if key not in d or tuple(np.shape(d[key])) != tuple(e.shape):
                    raise ValueError(f"trainer state lacks {key!r} of shape {tuple(e.shape)}")
                e.copy_(torch.from_numpy(np.asarray(d[key]).copy()))
        state = {}
        for i, name in enumerate(self.names):
            prefix = f"optim/{name}/"
            entry = {k[len(prefix):]: torch.from_numpy(np.asarray(v).copy())
                     for k, v in d.items() if k.startswith(prefix)}
            if entry:
                state[i] = entry
        groups = self.optimizer.state_dict()["param_groups"]
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        set_generator_state(self.generator, d["generator"])
        self.step = int(d["step"])
        self.lr_factor = float(d["lr_factor"])
        self.n_rollbacks = int(d["n_rollbacks"])
        self.loss_history = [float(x) for x in np.asarray(d["loss_history"]).reshape(-1)]
        data_state = {k[5:]: v for k, v in d.items() if k.startswith("data/")}
        if data_state and self.data is not None and hasattr(self.data, "load_state_dict"):
            self.data.load_state_dict(data_state)
        self._snapshot = None
        self._consecutive_rollbacks = 0
