"""Divergences of the probability-flow field and dense linear algebra on step Jacobians.

div f = tr K_t + tr(M_t J_r) (see rgdist.density.field): the first term in closed form, the
second by the closed form of a structured or exact-trace model, exactly from the full
remainder Jacobian (:func:`batched_jacobian`: V vector-Jacobian products; methods "trace"
and "discrete"), or by Hutchinson's estimator v^T M_t J_r v with ``n_probes`` Rademacher or
Gaussian probes per evaluation (unbiased; its variance is reported). :func:`slogdet` and
:func:`solve` factorize batches of step Jacobians one matrix at a time on CPU.
"""
from __future__ import annotations

from typing import Callable

import torch


def batched_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                     max_rows: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x), J) with J[b, i, j] = d fn(x)[b, i] / d x[b, j] (sites flattened), shape (B, V, V).

    ``fn`` must act on each configuration separately (no coupling across the batch). J is
    built from V one-hot vector-Jacobian products run as batched backward passes, at most
    ``max_rows`` (configuration, basis vector) pairs at a time.
    """
    B, V = x.shape[0], x[0].numel()
    chunk = max(1, min(V, max_rows // max(B, 1)))
    eye = torch.eye(V, dtype=x.dtype, device=x.device)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        y = fn(xg)
        rows = []
        for start in range(0, V, chunk):
            c = min(chunk, V - start)
            E = eye[start:start + c].reshape(c, 1, *x.shape[1:]).expand(c, *x.shape)
            (g,) = torch.autograd.grad(y, xg, E, retain_graph=start + c < V,
                                       is_grads_batched=True)
            rows.append(g.reshape(c, B, V))
    return y.detach(), torch.cat(rows).permute(1, 0, 2)



def _probes(kind: str, n_probes: int, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    shape = (n_probes, *x.shape)
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return (2 * bits - 1).to(x.dtype)


class Divergence:
    """div f at (x, t): returns (f, div, var), var the variance of the estimate (0 if exact).

    div f = tr K_t + tr(M_t J_r): the first term in closed form (sum_p k_t(p)); the second
    exactly ((M * J_r).sum, M symmetric) or by Hutchinson, v^T M J_r v = (M v)^T J_r v, one
    vector-Jacobian product of r per probe. ``flow``: the :class:`rgdist.density.field.FlowField`
    (not imported here: the field module imports this one).
    """

    def __init__(self, flow, method: str, n_probes: int, probe: str, generator,
                 max_rows: int):
        self.flow, self.method, self.n_probes, self.probe = flow, method, n_probes, probe
        self.generator, self.max_rows = generator, max_rows
        self.vjp = 0

    def __call__(self, x: torch.Tensor, t: float):
        flow = self.flow
        k, m = flow.kernels(t, x)
        tr_k = k.sum().to(torch.float64).expand(x.shape[0])
        if flow.rem is None:
            return flow(x, t), tr_k, torch.zeros_like(tr_k)
        if flow.rem_jac is not None:  # closed form, whatever the method
            with torch.no_grad():
                r = flow.remainder(x, t)
                c, d = flow.remainder_jacobian(x, t)
            dims = tuple(range(1, x.dim()))
            div = ((k + m * c).sum(dims) + m.mean() * d.sum(dims)).to(torch.float64)
            return flow.combine(x, r, t), div, torch.zeros_like(div)
        if flow.rem_trace is not None:  # exact-trace model: O(V K), whatever the method
            tb = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
            flow.nfe += 1
            r, tr = flow.rem_trace(x, tb, m)
            div = tr_k + tr.to(torch.float64)
            return flow.combine(x, r.to(x.dtype), t), div, torch.zeros_like(div)
        if self.method in ("trace", "discrete"):
            r, J_r = batched_jacobian(lambda z: flow.remainder(z, t), x, max_rows=self.max_rows)
            self.vjp += x[0].numel()
            M = flow.dense(t, x)[1]
            div = tr_k + (M * J_r).sum((1, 2)).to(torch.float64)
            return flow.combine(x, r, t), div, torch.zeros_like(div)
        v = _probes(self.probe, self.n_probes, x, self.generator)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            r = flow.remainder(xg, t)
            (g,) = torch.autograd.grad(r, xg, flow.lat.filter(v, m), is_grads_batched=True)
        self.vjp += self.n_probes
        est = (v * g).sum(tuple(range(2, v.dim()))).to(torch.float64)      # (P, B)
        div = tr_k + est.mean(0)
        if self.n_probes > 1:
            var = est.var(0, unbiased=True) / self.n_probes
        else:
            var = torch.full_like(div, float("nan"))
        return flow.combine(x, r.detach(), t), div.detach(), var.detach()



def slogdet(J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign, log|det|) of a batch of square matrices (..., V, V).

    On CPU the matrices are factorized one at a time: torch's batched LU on CPU (MKL
    getrf_batch) was measured to stall with "DLASWP parameter 6" errors for V >= ~200 and
    batch >= 2 (torch 2.13); one at a time it costs ~2 ms at V = 256.
    """
    if J.dim() < 3 or J.device.type != "cpu":
        return torch.linalg.slogdet(J)
    flat = J.reshape(-1, *J.shape[-2:])
    parts = [torch.linalg.slogdet(a) for a in flat]
    sign = torch.stack([p.sign for p in parts]).reshape(J.shape[:-2])
    logabs = torch.stack([p.logabsdet for p in parts]).reshape(J.shape[:-2])
    return sign, logabs


def solve(J: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.linalg.solve(J, b) for batches; one system at a time on CPU (see :func:`slogdet`)."""
    if J.dim() < 3 or J.device.type != "cpu":
        return torch.linalg.solve(J, b)
    flat_J = J.reshape(-1, *J.shape[-2:])
    flat_b = b.reshape(-1, *b.shape[-2:])
    out = torch.stack([torch.linalg.solve(a, c) for a, c in zip(flat_J, flat_b)])
    return out.reshape(b.shape)

