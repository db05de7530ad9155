"""The README's Python example runs (at a smaller size) and its API names exist."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs_small():
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    small = (code.replace("(16, 16)", "(6, 6)").replace("16, 16)", "6, 6)")
             .replace("HMC(Phi4Action(m2=-0.9, lam=1.0), lat, 512", "HMC(Phi4Action(m2=-0.9, lam=1.0), lat, 8")
             .replace("hmc.thermalize(400)", "hmc.thermalize(5)")
             .replace("hmc.sample(1600, thin=100)", "hmc.sample(8, thin=2)")
             .replace("steps=3000, batch_size=128", "steps=3, batch_size=8, warmup=1")
             .replace("4096, n_steps=100", "32, n_steps=4").replace("torch.arange(4096) % 32", "torch.arange(32) % 4")
             .replace("n_bins=32", "n_bins=4").replace("channels=16, blocks=2", "channels=2, blocks=1"))
    assert small != code
    env: dict = {}
    exec(compile(small, "README", "exec"), env)  # noqa: S102 - our own README
    value, err = env["acc"].estimate()["binder"]
    assert torch.isfinite(torch.tensor(value))
