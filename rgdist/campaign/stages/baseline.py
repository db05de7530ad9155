"""Stage 5 (optional, campaign section ``baseline:``): the flow baseline of Gerdes et al.
(rgdist.flow.baseline), trained and measured at the point's couplings after every other stage.

Steps 1..``baseline.steps``: one reverse-KL Adam step each (loss E_q[log q + S] / V on fresh
draws; no HMC data). Every rank of the point trains the same CNF from the same streams
(``("baseline", "init")`` for the weights, ``("baseline", "train")`` for the draws), so no
reduction can change the numbers; the point's root checkpoints the trainer state
(rgdist.flow.baseline.BaselineTrainer.state_dict: model, Adam moments, generator, counters,
history), from which a resume continues bit for bit.

The last step, on the point's root alone (like the correction stage): ``baseline.n_samples``
draws from ``("baseline", "sample")`` with their exact log-density (in
``baseline.sample_dtype``: the trained model cast to it), recorded at the flow times
``baseline.tau_grid`` (tau = 0 the Gaussian prior, tau = 1 the model; not a scheme time), the
importance weights log w = -S - log q of the tau = 1 draws, their ESS/n and Pareto k, and the
self-normalized reweighted observables. It keeps no intermediate state: a resume restarts it
from its beginning, with the same numbers.

The hand-over is the previous results plus ``results/baseline/...`` (rgdist.io.results):
``flow/t`` (tau) and ``flow/<observable>`` (2, K[, *shape]) as FlowResult.to_arrays,
``ess_fraction``, ``pareto_k``, ``n_samples``, ``nfe_per_sample`` (4 n_steps evaluations of
v and div v), ``reweight/<observable>`` [value, error], ``train/{loss,ess,steps,skipped}``.
The streams are the stage's own, so every other result is that of the campaign without it.
"""
from __future__ import annotations

import numpy as np

from rgdist import faults
from rgdist.campaign import build
from rgdist.campaign.stages.base import Stage, StageEnv, prefixed, strip

#: observables stored (as [value, err]) for the reweighted baseline ensemble
BASELINE_OBSERVABLES = ("abs_m", "m2", "chi", "chi_conn", "binder", "xi2", "m_R", "Z", "lambda_R",
                        "mean_max_abs")
#: group of the baseline's results in a point of the results file
GROUP = "baseline"


class BaselineStage(Stage):
    name = "baseline"
    UNITS = "baseline/"

    def __init__(self, baseline, env: StageEnv, *, carry: dict, n_bins: int):
        super().__init__(env)
        self.spec, self.carry = baseline, carry
        self.n_bins = max(2, min(int(n_bins), baseline.n_samples))
        self.cnf, self.trainer = build.baseline_for(baseline, env.lattice, env.action,
                                                    env.streams("baseline", "init"),
                                                    env.streams("baseline", "train"), env.device)
        self.out: dict = {}

    @property
    def total(self) -> int:
        return self.spec.steps + 1  # the training steps, then the sampling

    def restore(self, arrays, step) -> None:
        super().restore(arrays, step)
        if self.step > 0:
            self.trainer.load_state_dict(strip("baseline", arrays))
            self.step = int(self.trainer.step_count)

    def advance(self) -> None:
        if self.step < self.spec.steps:
            info = self.trainer.step()
            self.step = int(self.trainer.step_count)
            faults.maybe_kill("baseline_step")
            if self.step % 20 == 0 or self.step == self.spec.steps:
                self.env.report(progress=self.step / self.total, loss=float(info["loss"]))
            return
        if self.env.comm.is_root:
            self.out = self._measure()
        self.step = self.total

    def state(self) -> dict:
        if not self.env.comm.is_root:
            return {}
        return prefixed("baseline", self.trainer.state_dict())

    def results(self) -> dict:
        results = {k: v for k, v in self.carry.items() if k.startswith("results/")}
        results.update(prefixed(f"results/{GROUP}", self.out))
        return results

    def _measure(self) -> dict:
        """The n_samples draws: flow along tau, weights, reweighted observables (root only)."""
        from rgdist.correct import WeightedAccumulator, ess_fraction, pareto_k
        from rgdist.flow.baseline import accumulate_baseline_flow

        s, env, t = self.spec, self.env, self.trainer
        self.cnf.eval()
        cnf = self.cnf.cast(s.sampling_dtype)  # baseline.sample_dtype
        reweighted = WeightedAccumulator(env.lattice, self.n_bins)

        def progress(done):
            env.report(progress=(s.steps + done / s.n_samples) / self.total)

        try:
            acc, _, log_w = accumulate_baseline_flow(
                cnf, s.n_samples, generator=env.streams("baseline", "sample"),
                tau_grid=s.taus, n_bins=self.n_bins, batch_size=s.sample_batch,
                action=env.action, reweighted=reweighted, callback=progress)
            est = reweighted.estimate()
        except ValueError as exc:  # nan/inf log-weights or no draw with weight > 0
            raise FloatingPointError(f"the flow baseline produced unusable draws ({exc}); train "
                                     "it longer or more gently (baseline.steps, baseline.lr) or "
                                     "use more baseline.n_steps") from None
        faults.maybe_kill("baseline_sample")
        flow = acc.result(kind="baseline")
        out = {**prefixed("flow", flow.to_arrays()),
               "ess_fraction": np.asarray(ess_fraction(log_w), dtype=np.float64),
               "pareto_k": np.asarray(pareto_k(log_w), dtype=np.float64),
               "n_samples": np.asarray(s.n_samples, dtype=np.int64),
               "nfe_per_sample": np.asarray(4 * s.n_steps, dtype=np.int64),
               "train/loss": np.asarray(t.history["loss"], dtype=np.float64),
               "train/ess": np.asarray(t.history["ess"], dtype=np.float64),
               "train/steps": np.asarray(t.step_count, dtype=np.int64),
               "train/skipped": np.asarray(t.skipped, dtype=np.int64)}
        out.update({f"reweight/{k}": np.array([est[k][0], est[k][1]], dtype=np.float64)
                    for k in BASELINE_OBSERVABLES})
        env.log(f"flow baseline: {t.step_count} reverse-KL steps ({t.skipped} skipped), "
                f"ESS/n {float(out['ess_fraction']):.3f}, Pareto k {float(out['pareto_k']):.2f}")
        return out
