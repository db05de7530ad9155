"""Sampler and training throughput per precision mode, eager and torch.compile'd (JSON to
stdout, a table to stderr; ``--out FILE`` also writes the JSON, rewritten after every row so
that a run cut short by a timeout keeps what it measured).

Model: the default campaign's score model, a GaussianExact ConvScore (16 channels, 2 residual
blocks) on the Carosso scheme (T = 40, mu2 = 0.1); the data are white noise (timings only).
Conventions as in a campaign (rgdist/campaign/point.py): fields and training data float64,
the model in its own dtype, the sampler's score called as ``model(phi.to(dtype), t.to(dtype))``.

Precision modes:
    fp64   float64 model
    fp32   float32 model, TF32 off (torch.backends.cuda.matmul / cudnn .allow_tf32 = False)
    tf32   float32 model, TF32 on (TrainConfig(tf32=True); CUDA only)
    bf16   float32 model under torch.autocast(bfloat16) (TrainConfig(amp="bf16") for training,
           the same autocast around the sampler's score calls), TF32 off
each eager and with ``build_model(..., compile=True)`` (torch.compile, default mode; fp64 is
not compiled). Per (N, mode, compile):

    train    Trainer.train_step (minibatch, DSM loss, backward, clip, Adam, EMA, NaN-guard
             snapshot): ``warmup`` steps (the first one compiles; its time is warmup_s), then
             ``steps`` timed steps -> steps/s and configurations/s (batch x steps/s)
    sample   sample_ensemble, exponential solver: one warm-up batch (compiles), then
             ``reps`` batches timed -> configurations/s and score evaluations/s
    accuracy max |s - s_fp64| / max |s_fp64| of the score of a model with random weights
             (the same weights in every mode) on 256 fields: what the mode costs in rounding

Variants run in a fixed order (eager first) until ``--budget-s`` seconds have passed; the rest
are recorded as skipped. ``--device cuda`` without CUDA prints a JSON note and exits 0.

    python benchmarks/gpu_throughput.py --device cuda [--sizes 16 64] [--budget-s 200]
    OMP_NUM_THREADS=1 python benchmarks/gpu_throughput.py --device cpu --quick
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rgdist.lattice import Lattice  # noqa: E402
from rgdist.models import build_model  # noqa: E402
from rgdist.rg import build_scheme  # noqa: E402
from rgdist.sample import sample_ensemble  # noqa: E402
from rgdist.train import EnsembleData, TrainConfig, Trainer, measured_spectrum  # noqa: E402

MODES = ("fp64", "fp32", "tf32", "bf16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dynamo_reset() -> None:
    importlib.import_module("torch._dynamo").reset()


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device),
            "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update({"gpu": p.name, "capability": f"{p.major}.{p.minor}",
                     "gpu_memory_gib": round(p.total_memory / 2**30, 1),
                     "multiprocessors": p.multi_processor_count,
                     "cuda_runtime": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(),
                     "bf16_supported": torch.cuda.is_bf16_supported()})
    return info


class Bench:
    def __init__(self, args, device: torch.device):
        self.args, self.device = args, device
        self.t_start = time.perf_counter()
        self.out = {"config": {k: v for k, v in vars(args).items() if k != "out"},
                    "environment": environment(device), "model": "gaussian_exact conv "
                    f"(channels {args.channels}, blocks {args.blocks})",
                    "scheme": "carosso(T=40, mu2=0.1)", "rows": [], "status": "running"}

    # ---------------------------------------------------------------- bookkeeping
    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def save(self) -> None:
        if self.args.out:
            path = Path(self.args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(self.out, indent=1))
            os.replace(tmp, path)

    def add(self, row: dict) -> None:
        self.out["rows"].append(row)
        self.save()
        a = row
        if "error" in a or "skipped" in a:
            note = a.get("error") or a.get("skipped")
            print(f"{a['N']:>4} {a['task']:>6} {a['mode']:>5} {str(a['compile']):>7}  -- "
                  f"{note[:70]}", file=sys.stderr, flush=True)
            return
        rate = a["configs_per_s"]
        extra = (f"{a['steps_per_s']:9.1f} steps/s" if a["task"] == "train"
                 else f"{a['score_evals_per_s']:9.3g} evals/s")
        print(f"{a['N']:>4} {a['task']:>6} {a['mode']:>5} {str(a['compile']):>7} "
              f"{rate:11.4g} cfg/s {extra}  warm-up {a['warmup_s']:6.2f} s",
              file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- pieces
    def setup(self, N: int):
        lat = Lattice(N)
        scheme = build_scheme("carosso", lat, T=40.0, mu2=0.1)
        configs = lat.white_noise(2048, torch.Generator().manual_seed(0))
        G = measured_spectrum(configs, lat)
        return lat, scheme, configs, G

    def model(self, lat, scheme, G, mode: str, compile_: bool):
        dtype = "float64" if mode == "fp64" else "float32"
        m = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                        channels=self.args.channels, blocks=self.args.blocks, dtype=dtype)
        m = m.to(self.device)
        return torch.compile(m) if compile_ else m

    def autocast(self, mode: str):
        if mode == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train(self, N: int, mode: str, compile_: bool) -> dict:
        a = self.args
        lat, scheme, configs, G = self.setup(N)
        set_tf32(False)
        model = self.model(lat, scheme, G, mode, compile_)
        cfg = TrainConfig(steps=10**6, batch_size=a.train_batch, lr=1e-3, log_every=0,
                          amp="bf16" if mode == "bf16" else "off", tf32=mode == "tf32")
        gen = torch.Generator(device=self.device).manual_seed(1)
        trainer = Trainer(model, scheme, EnsembleData(configs.to(self.device)), cfg, gen)
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(a.train_warmup):
            trainer.train_step()
        sync(self.device)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(a.train_steps):
            trainer.train_step()
        sync(self.device)
        dt = time.perf_counter() - t0
        losses = torch.tensor(trainer.loss_history, dtype=torch.float64)
        return {"batch": a.train_batch, "steps": a.train_steps, "warmup_steps": a.train_warmup,
                "warmup_s": warm, "seconds": dt, "steps_per_s": a.train_steps / dt,
                "configs_per_s": a.train_batch * a.train_steps / dt,
                "rollbacks": trainer.n_rollbacks,
                "finite": bool(torch.isfinite(losses).all()),
                "last_loss": float(losses[-1]) if len(losses) else None}

    def sample(self, N: int, mode: str, compile_: bool) -> dict:
        a = self.args
        lat, scheme, _, G = self.setup(N)
        set_tf32(mode == "tf32")
        model = self.model(lat, scheme, G, mode, compile_).eval()
        mdtype = torch.float64 if mode == "fp64" else torch.float32
        Gd = G.to(self.device)

        def score_fn(phi, t):
            with torch.no_grad(), self.autocast(mode):
                return model(phi.to(mdtype), t.to(mdtype)).to(phi.dtype)

        def run(n):
            with torch.inference_mode():
                res = sample_ensemble(score_fn, scheme, n, n_steps=a.sample_steps,
                                      solver="exponential", grid="uniform",
                                      batch_size=a.sample_batch, seed_streams=(3, "gpu", N),
                                      prior_G=Gd, device=self.device)
            sync(self.device)
            return res

        t0 = time.perf_counter()
        run(a.sample_batch)
        warm = time.perf_counter() - t0
        n = a.sample_batch * a.sample_reps
        t0 = time.perf_counter()
        res = run(n)
        dt = time.perf_counter() - t0
        set_tf32(False)
        return {"batch": a.sample_batch, "n_samples": n, "n_steps": a.sample_steps,
                "nfe_per_config": res.nfe, "warmup_s": warm, "seconds": dt,
                "configs_per_s": n / dt, "score_evals_per_s": n * res.nfe / dt,
                "finite": bool(torch.isfinite(res.samples).all())}

    def accuracy(self, N: int) -> dict:
        """Relative score error of each mode against float64, random (shared) weights."""
        lat, scheme, _, G = self.setup(N)
        ref = build_model("conv", lat, scheme=scheme, data_spectrum=G, gaussian_exact=True,
                          channels=self.args.channels, blocks=self.args.blocks, dtype="float64")
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in ref.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        phi = lat.colored_noise(G, 256, g).to(self.device)
        out = {}
        ref = ref.to(self.device)
        for t in (0.01, 1.0, 30.0):
            tt = torch.full((256,), t, dtype=torch.float64, device=self.device)
            with torch.no_grad():
                s64 = ref(phi, tt)
                for mode in MODES[1:]:
                    if mode == "tf32" and self.device.type != "cuda":
                        continue
                    set_tf32(mode == "tf32")
                    m32 = copy.deepcopy(ref).float()
                    with self.autocast(mode):
                        s = m32(phi.float(), tt.float()).double()
                    err = float((s - s64).abs().max() / s64.abs().max())
                    out[mode] = max(out.get(mode, 0.0), err)
        set_tf32(False)
        return {"N": N, "score_rel_err_vs_fp64": out}

    # ---------------------------------------------------------------- driver
    def variants(self):
        compiled = [] if self.args.no_compile else [True]
        # eager first; compiled in the order fp32, bf16, tf32 (the likeliest to matter first)
        order = [(m, False) for m in MODES] + [(m, c) for c in compiled
                                               for m in ("fp32", "bf16", "tf32")]
        for mode, compile_ in order:
            for N in self.args.sizes:
                for task in ("sample", "train"):
                    yield N, task, mode, compile_

    def run(self) -> dict:
        print(f"{'N':>4} {'task':>6} {'mode':>5} {'compile':>7} {'throughput':>15}",
              file=sys.stderr, flush=True)
        for N, task, mode, compile_ in self.variants():
            row = {"N": N, "task": task, "mode": mode, "compile": compile_}
            if mode == "tf32" and self.device.type != "cuda":
                row["skipped"] = "TF32 exists on CUDA only"
            elif mode == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
                row["skipped"] = "this GPU has no bf16"
            elif self.elapsed() > self.args.budget_s:
                row["skipped"] = f"time budget of {self.args.budget_s:.0f} s used up"
            else:
                try:
                    if compile_:  # fresh Dynamo caches: no cache_size_limit fallback to eager
                        dynamo_reset()
                        counters = importlib.import_module("torch._dynamo.utils").counters
                        counters.clear()
                    t0 = time.perf_counter()
                    row.update(self.train(N, mode, compile_) if task == "train"
                               else self.sample(N, mode, compile_))
                    row["wall_s"] = time.perf_counter() - t0
                    if compile_:
                        row["dynamo"] = {"unique_graphs": int(counters["stats"]["unique_graphs"]),
                                         "graph_breaks": int(sum(counters["graph_break"].values()))}
                except Exception as exc:  # one failing variant (say, compile) must not end the run
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    row["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
                    set_tf32(False)
                    if compile_:
                        dynamo_reset()
            self.add(row)
        self.out["accuracy"] = []
        for N in self.args.sizes:
            try:
                self.out["accuracy"].append(self.accuracy(N))
            except Exception as exc:
                self.out["accuracy"].append({"N": N, "error": f"{type(exc).__name__}: {exc}"})
        self.out["speedup_vs_eager_fp32"] = self.speedups()
        self.out["status"] = "done"
        self.out["wall_s"] = self.elapsed()
        self.save()
        return self.out

    def speedups(self) -> list:
        base = {(r["N"], r["task"]): r["configs_per_s"] for r in self.out["rows"]
                if r["mode"] == "fp32" and not r["compile"] and "configs_per_s" in r}
        out = []
        for r in self.out["rows"]:
            b = base.get((r["N"], r["task"]))
            if b and "configs_per_s" in r:
                out.append({"N": r["N"], "task": r["task"], "mode": r["mode"],
                            "compile": r["compile"], "speedup": r["configs_per_s"] / b})
        return out


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu", "auto"), default="cuda")
    ap.add_argument("--quick", action="store_true",
                    help="N = 16 only, small batches, few steps (a CPU smoke run)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--no-compile", action="store_true", help="eager variants only")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no variant after this many seconds (default 240; --quick 120)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    quick = args.quick
    if args.sizes is None:
        args.sizes = [16] if quick else [16, 64]
    if args.budget_s is None:
        args.budget_s = 120.0 if quick else 240.0
    args.train_batch = 32 if quick else 256
    args.train_warmup = 2 if quick else 5
    args.train_steps = 5 if quick else 40
    args.sample_batch = 32 if quick else 1024
    args.sample_steps = 8 if quick else 50
    args.sample_reps = 1 if quick else 2
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        out = {"status": "skipped", "note": "no CUDA: torch.cuda.is_available() is False "
               f"(torch {torch.__version__}); run with --device cpu for a CPU measurement"}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
        return out
    out = Bench(args, torch.device(args.device)).run()
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
