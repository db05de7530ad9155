"""Model registry and checkpoint state as plain named numpy arrays.

    build_model(name, lattice, *, scheme=None, data_spectrum=None, gaussian_exact=False,
                compile=False, **params)

names: "conv" (ConvScore), "unet" (UNetScore), "trace" (TraceScore: exact O(V K) Jacobian
trace, needs ``scheme``), "effective" (EffectiveActionScore; params
``residual=True`` adds a ConvScore remainder built from ``residual_channels``,
``residual_blocks``). Parameters are initialized from ``generator`` (a torch.Generator) if
given, else from a fresh generator seeded with ``init_seed`` (default 0). ``t_max`` (the time normalization of the embedding) defaults to
``scheme.T`` when a scheme is given, else 1. ``gaussian_exact=True`` wraps the net in
GaussianExactScore (needs ``scheme`` and ``data_spectrum``). ``compile=True`` returns
``torch.compile(model)``; :func:`named_arrays` and :func:`load_named_arrays` see through it.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from rgdist.catalog import MODEL_PARAMS, TIME_FREQ_DEFAULT
from rgdist.lattice.geometry import Lattice
from rgdist.models.convnet import ConvScore
from rgdist.models.effective import EffectiveActionScore, GaussianExactScore
from rgdist.models.layers import init_generator
from rgdist.models.tracenet import TraceScore
from rgdist.models.unet import UNetScore

MODELS = {"conv": ConvScore, "unet": UNetScore, "trace": TraceScore,
          "effective": EffectiveActionScore}  # the names of rgdist.catalog.MODELS, in order
# build_model's own parameters of the effective model (its ConvScore remainder), with their
# defaults in rgdist.catalog.MODEL_PARAMS["effective"]
_EFFECTIVE_EXTRA = ("residual_channels", "residual_blocks")
_EFFECTIVE = MODEL_PARAMS["effective"]


def allowed_params(name: str) -> list[str]:
    """Keyword parameters accepted by model ``name`` (besides the build_model keywords)."""
    cls = MODELS[name]
    keys = [k for k in inspect.signature(cls.__init__).parameters
            if k not in ("self", "lattice", "scheme")]
    if name == "effective":
        keys += list(_EFFECTIVE_EXTRA)
    return keys


def build_model(name: str, lattice: Lattice, *, scheme=None, data_spectrum=None,
                gaussian_exact: bool = False, compile: bool = False, zero_mode_head: bool = False,
                **params) -> nn.Module:
    """Build a score model by registry name (see the module docstring). ``zero_mode_head``:
    add a magnetization head (rgdist.models.zero_mode.ZeroModeHead) inside the
    Gaussian-exact wrapper (needs gaussian_exact=True)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    for flag, value in (("gaussian_exact", gaussian_exact), ("compile", compile),
                        ("zero_mode_head", zero_mode_head)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    allowed = allowed_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for model {name!r}; allowed: "
                         f"{allowed}")
    if scheme is not None and "t_max" not in params:
        params["t_max"] = float(scheme.T)
    if name == "trace":
        params["scheme"] = scheme
    if name == "effective":
        residual = params.pop("residual", _EFFECTIVE["residual"])
        r_ch = params.pop("residual_channels", _EFFECTIVE["residual_channels"])
        r_bl = params.pop("residual_blocks", _EFFECTIVE["residual_blocks"])
        if not isinstance(residual, bool):
            raise ValueError(f"residual must be True or False for model 'effective', got "
                             f"{residual!r}")
        if residual:
            sub = {k: params[k] for k in ("hidden", "n_freq", "t_max", "dtype") if k in params}
            sub["init_seed"] = params.get("init_seed", 0) + 1
            sub["generator"] = params.get("generator")
            params["residual"] = ConvScore(lattice, channels=r_ch, blocks=r_bl, **sub)
    try:
        model = MODELS[name](lattice, **params)
    except TypeError as exc:  # wrong parameter types that slipped past validation
        raise ValueError(f"bad parameters for model {name!r}: {exc}") from None
    if gaussian_exact:
        if scheme is None or data_spectrum is None:
            raise ValueError("gaussian_exact=True needs both scheme and data_spectrum")
        if zero_mode_head:
            from rgdist.models.zero_mode import ZeroModeHead

            model = ZeroModeHead(model, scheme, data_spectrum, t_max=params["t_max"],
                                 hidden=params.get("hidden", 32),
                                 n_freq=params.get("n_freq", TIME_FREQ_DEFAULT),
                                 generator=init_generator(params.get("init_seed", 0) + 2,
                                                          params.get("generator")))
        model = GaussianExactScore(model, scheme, data_spectrum)
    elif zero_mode_head:
        raise ValueError("zero_mode_head=True needs gaussian_exact=True (the head works in the "
                         "units of the Gaussian-exact zero mode)")
    elif data_spectrum is not None:
        raise ValueError("data_spectrum is used only with gaussian_exact=True")
    if getattr(model, "channels_last", False) or getattr(getattr(model, "net", None),
                                                         "channels_last", False):
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a ``torch.compile`` wrapper (or the model itself)."""
    return getattr(model, "_orig_mod", model)


def named_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """Parameters and buffers as {name: numpy array} copies (no pickle)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in unwrap(model).state_dict().items()}


def load_named_arrays(model: nn.Module, arrays: dict) -> nn.Module:
    """Load :func:`named_arrays` output; names and shapes must match exactly."""
    target = unwrap(model).state_dict()
    missing = sorted(set(target) - set(arrays))
    extra = sorted(set(arrays) - set(target))
    if missing or extra:
        raise ValueError(f"named arrays do not match the model: missing {missing}, "
                         f"unexpected {extra}")
    new = {}
    for k, ref in target.items():
        a = np.asarray(arrays[k])
        if tuple(a.shape) != tuple(ref.shape):
            raise ValueError(f"array {k!r} has shape {a.shape}, the model expects "
                             f"{tuple(ref.shape)}")
        new[k] = torch.from_numpy(a.copy()).to(dtype=ref.dtype, device=ref.device)
    unwrap(model).load_state_dict(new)
    return model
