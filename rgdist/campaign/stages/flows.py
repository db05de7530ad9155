"""The RG flows of a grid point: the forward (exact) flow of its HMC ensemble, the learned
flow of its sampler, the Gaussian closed form, their deviations and running couplings."""
from __future__ import annotations

import numpy as np
import torch


def _unwrap(model):
    """The innermost score model (through Gaussian-exact and compile wrappers)."""
    for attr in ("net", "_orig_mod", "module"):
        inner = getattr(model, attr, None)
        if isinstance(inner, torch.nn.Module):
            return _unwrap(inner)
    return model


def flow_results(env, scheme, model, G, t_flow, learned_acc, carry, *, n_bins: int,
                 weighting: str, zero_mode_weight: float = 1.0) -> dict:
    """{name: array} under flow/ (layout 2): forward, learned and gaussian flows (FlowResult arrays),
    deviation/<observable> and couplings/<gaussian|learned>/<operator>.

    The forward flow is network-free and cheap: every rank computes all of it in the same
    order, with the streams ``("flow_exact", k)`` for batch k."""
    from rgdist.flow.couplings import gaussian_couplings, learned_couplings
    from rgdist.flow.forward import accumulate_forward_flow, gaussian_flow
    from rgdist.flow.learned import compare_flows

    lattice = env.lattice
    data = torch.as_tensor(carry["data/configs"])
    bins = torch.as_tensor(carry["data/chain"]) % n_bins
    fwd_acc, snaps = accumulate_forward_flow(data, scheme, t_flow, n_bins=n_bins, bins=bins,
                                           generator=lambda k: env.streams("flow_exact", k),
                                           batch_size=1024, n_keep=4)
    forward = fwd_acc.result(kind="forward", snapshots=snaps)
    learned = learned_acc.result(kind="learned")
    gauss = gaussian_flow(lattice, scheme, G.cpu(), t_flow)
    out = {**{f"flow/forward/{k}": v for k, v in forward.to_arrays().items()},
           **{f"flow/learned/{k}": v for k, v in learned.to_arrays().items()},
           **{f"flow/gaussian/{k}": v for k, v in gauss.to_arrays().items()}}
    for name, dev in compare_flows(forward, learned).items():
        out[f"flow/deviation/{name}"] = np.asarray(dev, dtype=np.float64)
    gc = gaussian_couplings(lattice, scheme, G.cpu(), t_flow, weighting=weighting,
                            zero_mode_weight=zero_mode_weight)
    out.update({f"flow/couplings/gaussian/{k}": np.asarray(v, dtype=np.float64) for k, v in gc.items()})
    inner = _unwrap(model)
    if hasattr(inner, "couplings"):
        lc = learned_couplings(inner, t_flow, T=scheme.T)
        out.update({f"flow/couplings/learned/{k}": np.asarray(v, dtype=np.float64) for k, v in lc.items()})
    return out
