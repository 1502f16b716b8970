"""Generate the small TorchScript models the C++ tests use (written at test time, never committed).

Usage: python make_test_models.py OUTPUT_DIR

Every model maps positions (5, 3) nm [+ box (3, 3)] to z through pair distances and a tanh layer, in the latentbias
model format (TorchScript + "latentbias.json" metadata):

* model_d3.pt       float64, latent_dim 3
* model_d3_f32.pt   float32, latent_dim 3
* model_pbc.pt      float64, latent_dim 2, minimum-image distances when a box is given
* model_bad_dim.pt  metadata says latent_dim 2 but the model returns 3 values
* model_nometa.pt   float64, 2 outputs, no metadata
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

N_ATOMS = 5


class PairNet(torch.nn.Module):
    def __init__(self, n_out: int, dtype: torch.dtype, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        pairs = [(i, j) for i in range(N_ATOMS) for j in range(i + 1, N_ATOMS)]
        self.register_buffer("first", torch.tensor([p[0] for p in pairs]))
        self.register_buffer("second", torch.tensor([p[1] for p in pairs]))
        self.register_buffer("w1", (torch.randn(len(pairs), 8, generator=g) * 0.8).to(dtype))
        self.register_buffer("b1", (torch.randn(8, generator=g) * 0.1).to(dtype))
        self.register_buffer("w2", (torch.randn(8, n_out, generator=g) * 0.7).to(dtype))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        x = positions.to(self.w1.dtype)
        dr = x.index_select(0, self.second) - x.index_select(0, self.first)
        if box is not None:
            lengths = torch.diagonal(box.to(self.w1.dtype))
            dr = dr - lengths * torch.round(dr / lengths)
        d = torch.sqrt((dr * dr).sum(1))
        h = torch.tanh((d - 0.4) @ self.w1 + self.b1)
        return h @ self.w2


def save(module: torch.nn.Module, path: Path, latent_dim: Optional[int], dtype: str) -> None:
    scripted = torch.jit.script(module)
    extra = {}
    if latent_dim is not None:
        meta = {
            "format": "latentbias-model",
            "format_version": 1,
            "n_atoms": N_ATOMS,
            "latent_dim": latent_dim,
            "dtype": dtype,
            # a nested key with the same name must not confuse the C++ metadata reader
            "architecture": {"latent_dim": 99, "n_atoms": 1},
            "periodic": [None] * latent_dim,
        }
        extra["latentbias.json"] = json.dumps(meta)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer, _extra_files=extra)
    path.write_bytes(buffer.getvalue())


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    save(PairNet(3, torch.float64, 1), out / "model_d3.pt", 3, "float64")
    save(PairNet(3, torch.float32, 1), out / "model_d3_f32.pt", 3, "float32")
    save(PairNet(2, torch.float64, 2), out / "model_pbc.pt", 2, "float64")
    save(PairNet(3, torch.float64, 3), out / "model_bad_dim.pt", 2, "float64")
    save(PairNet(2, torch.float64, 4), out / "model_nometa.pt", None, "float64")
    print(f"wrote test models to {out}")


if __name__ == "__main__":
    main()
