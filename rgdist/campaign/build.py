"""The one place that turns campaign config sections into library objects.

Each function takes the section(s) it reads and explicit arguments, never the whole
campaign, and returns a plain library object (rgdist.lattice, rgdist.rg, rgdist.models,
rgdist.train, rgdist.correct, rgdist.flow.baseline). The stages call these; nothing else in
the campaign layer constructs library objects from config.
"""
from __future__ import annotations

import numpy as np
import torch


def hmc_sampler(hmc, action, lattice, n_chains: int, generator, device, dtype):
    """An :class:`rgdist.lattice.hmc.HMC` of ``n_chains`` chains from the ``hmc`` section."""
    from rgdist.lattice.hmc import HMC

    return HMC(action, lattice, n_chains, step_size=hmc.step_size, n_steps=hmc.n_steps,
               integrator=hmc.integrator, fourier_accel=hmc.fourier_accel, fa_mass2=hmc.fa_mass2,
               target_accept=hmc.target_accept, jitter=hmc.jitter, generator=generator,
               device=device, dtype=dtype)


def hybrid_hmc_params(hmc, step_sizes) -> dict:
    """HMC parameters of the hybrid MH chain (``correct.hmc_trajectories > 0``).

    The trajectory length of the configured HMC is ``hmc.n_steps * hmc.step_size``; the data
    stage adapted the step size per block (``step_sizes``). The hybrid keeps the adapted
    (mean) step size, for its acceptance, and takes as many steps as give the configured
    trajectory length: n = max(1, round(n_steps * step_size / adapted))."""
    adapted = float(np.mean(step_sizes))
    n_steps = max(1, int(round(hmc.n_steps * hmc.step_size / adapted)))
    return {"step_size": adapted, "n_steps": n_steps, "integrator": hmc.integrator,
            "jitter": hmc.jitter, "fourier_accel": hmc.fourier_accel, "fa_mass2": hmc.fa_mass2}


def scheme_for(scheme, lattice):
    """The noising scheme of the ``scheme`` section on ``lattice``."""
    from rgdist.rg import build_scheme

    return build_scheme(scheme.name, lattice, **scheme.params)


def model_for(model, lattice, scheme, G, generator, device):
    """The score model of the ``model`` section (Gaussian-exact on the measured spectrum
    ``G`` when ``model.gaussian_exact``), on ``device`` in ``model.dtype``."""
    from rgdist.models import build_model

    mdtype = torch.float64 if model.dtype == "float64" else torch.float32
    net = build_model(model.name, lattice, scheme=scheme,
                      data_spectrum=G if model.gaussian_exact else None,
                      gaussian_exact=model.gaussian_exact, generator=generator, **model.params)
    return net.to(device=device, dtype=mdtype)


def trainer_for(train, t_min: float, model, scheme, data, action, G, generator, device, callbacks=()):
    """The :class:`rgdist.train.Trainer` of the ``train`` section on the HMC ``data``; a
    reverse-KL objective's flow starts from the prior the sampler uses (prior_G = G)."""
    from rgdist.train import EnsembleData, TrainConfig, Trainer

    cfg = TrainConfig(**train.as_kwargs(), t_min=t_min)
    source = EnsembleData(data.to(device), augment=True)
    return Trainer(model, scheme, source, cfg, generator=generator, action=action,
                   prior_G=G.to(device), callbacks=callbacks)


def baseline_for(baseline, lattice, action, init_generator, generator, device):
    """(cnf, trainer): the flow baseline of the ``baseline`` section at the point's ``action``
    (rgdist.flow.baseline.BaselineCNF, initialized from ``init_generator``, and its
    reverse-KL BaselineTrainer drawing from ``generator``), on ``device``."""
    from rgdist.flow.baseline import BaselineCNF, BaselineTrainConfig, BaselineTrainer

    cnf = BaselineCNF(lattice, m0_sq=baseline.m0_sq, n_steps=baseline.n_steps,
                      channels=baseline.channels, global_channels=baseline.global_channels,
                      radius=baseline.radius, filter_rank=baseline.filter_rank,
                      dtype=baseline.dtype, generator=init_generator).to(device)
    cfg = BaselineTrainConfig(steps=baseline.steps, batch_size=baseline.batch_size, lr=baseline.lr,
                              lr_schedule=baseline.lr_schedule, lr_min_ratio=baseline.lr_min_ratio,
                              warmup=baseline.warmup, grad_clip=baseline.grad_clip or None,
                              checkpoint=baseline.grad_checkpoint)
    return cnf, BaselineTrainer(cnf, action, cfg, generator=generator)
