"""The multi-histogram (Ferrenberg-Swendsen / MBAR) equations in m2 and their overlap matrix
(numpy only), used by :class:`rgdist.analysis.reweight_m2.MultiHistogram`.

K ensembles k at m2_k, pooled configurations n with E_n = sum_x phi_x^2, reduced energies
u_k(n) = du_k E_n with du_k = (m2_k - m2_ref)/2 (the reference only shifts the gauge),
effective counts N'_k = N_k / g_k (statistical inefficiency g_k) and c_n = 1/g_{k(n)}:

    D_n = sum_j N'_j exp(f_j - u_j(n)),      f_k = -log sum_n c_n exp(-u_k(n)) / D_n,

in the gauge f_0 = 0.  The solution minimizes the convex A(f) = sum_n c_n log D_n -
sum_k N'_k f_k (Shirts & Chodera's MBAR objective): gradient sum_n c_n p_k(n) - N'_k with
p_k(n) = N'_k exp(f_k - u_k(n)) / D_n (sum_k p_k(n) = 1), Hessian diag(sum_n c_n p_k) -
sum_n c_n p_k p_j.  Newton steps with backtracking; the plain self-consistent update where a
Newton step does not lower A.  Everything in log space.

Overlap matrix (Shirts & Chodera): O_ij = sum_n c_n p_i(n) p_j(n) / N'_i, rows summing to 1;
O_ij is the chance that a configuration of ensemble i is "claimed" by j.  Ensembles that do
not overlap give a block-diagonal O (its second largest eigenvalue 1): the free energies
between the blocks are then not determined by the data.
"""
from __future__ import annotations

import numpy as np

from rgdist.analysis.reweight_core import logsumexp

__all__ = ["overlap_matrix", "solve_free_energies"]


def _state(E, ens, du, g):
    K = len(du)
    neff = np.bincount(ens, minlength=K).astype(np.float64) / g
    c = 1.0 / g[ens]
    u = du[:, None] * E[None, :]                                  # (K, n)
    return neff, c, u


def solve_free_energies(E: np.ndarray, ens: np.ndarray, du: np.ndarray, g: np.ndarray,
                        f0: np.ndarray, tol: float, max_iter: int,
                        where: str = "") -> tuple[np.ndarray, np.ndarray, int]:
    """(f with f[0] = 0, log D_n, number of steps) of the configurations (E, ens).

    Converged when max_k |grad_k| / N'_k < ``tol``; ``max_iter`` steps at most (a solve that
    converges in exactly ``max_iter`` steps is accepted).  ValueError otherwise.
    """
    neff, c, u = _state(E, ens, du, g)
    log_neff, log_c = np.log(neff), np.log(c)

    def parts(f):
        a = (log_neff + f)[:, None] - u
        log_d = logsumexp(a, axis=0)
        return a, log_d, float(np.sum(c * log_d) - np.sum(neff * f))

    f0 = np.asarray(f0, dtype=np.float64)
    f = f0 - f0[0]
    a, log_d, obj = parts(f)
    if len(du) == 1:
        return np.zeros(1), log_d, 0
    for it in range(max_iter + 1):
        p = np.exp(a - log_d[None, :])                             # (K, n)
        cp = p * c[None, :]
        grad = cp.sum(1) - neff
        if np.max(np.abs(grad) / neff) < tol:
            return f, log_d, it
        if it == max_iter:
            break
        hess = np.diag(cp.sum(1)) - cp @ p.T
        try:
            delta = np.linalg.solve(hess[1:, 1:], -grad[1:])
        except np.linalg.LinAlgError:
            delta = None
        stepped = False
        if delta is not None and np.all(np.isfinite(delta)):
            t = 1.0
            for _ in range(30):
                f_new = f.copy()
                f_new[1:] += t * delta
                a_new, log_d_new, obj_new = parts(f_new)
                if obj_new <= obj + 1e-12 * abs(obj):
                    f, a, log_d, obj, stepped = f_new, a_new, log_d_new, obj_new, True
                    break
                t *= 0.5
        if not stepped:  # the self-consistent update
            f_new = -logsumexp(log_c[None, :] - u - log_d[None, :], axis=1)
            f = f_new - f_new[0]
            a, log_d, obj = parts(f)
    raise ValueError(
        f"the multi-histogram equations did not converge in {max_iter} iterations{where}: "
        "the ensembles probably do not overlap; add ensembles in between")


def overlap_matrix(E: np.ndarray, ens: np.ndarray, du: np.ndarray, g: np.ndarray,
                   f: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """O_ij = sum_n c_n p_i(n) p_j(n) / N'_i at the solution (f, log D_n), shape (K, K)."""
    neff, c, u = _state(E, ens, du, g)
    p = np.exp((np.log(neff) + f)[:, None] - u - log_d[None, :])
    return (p * c[None, :]) @ p.T / neff[:, None]
