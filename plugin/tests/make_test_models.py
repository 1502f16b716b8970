"""Generate the small TorchScript models the C++ tests use (written at test time, never committed).

Usage: python make_test_models.py OUTPUT_DIR

Every model maps positions (5, 3) nm [+ box (3, 3)] to z through pair distances and a tanh layer, in the latentbias
model format (TorchScript + "latentbias.json" metadata):

* model_d3.pt       float64, latent_dim 3
* model_d3_f32.pt   float32, latent_dim 3
* model_pbc.pt      float64, latent_dim 2, minimum-image distances when a box is given
* model_bad_dim.pt  metadata says latent_dim 2 but the model returns 3 values
* model_nometa.pt   float64, 2 outputs, no metadata
* model_detached.pt float64, latent_dim 3, output detached from the positions (refused at the first force evaluation)
* model_v2*.pt      model format 2 (with the checksums latentbias.save_model writes; only where latentbias imports):
  model_v2.pt intact (its metadata has floats and non-ASCII text, to check the canonical JSON), model_v2_flipped.pt
  one byte flipped inside the weights entry data/0 (its zip CRC no longer matches), model_v2_meta_edited.pt and
  model_v2_weights_edited.pt re-zipped with an edited metadata value / weight byte and the old checksums (CRCs valid),
  model_v2_downgraded.pt re-zipped with its format_version edited to 1 (checksums kept), model_v2_local_name.pt one
  byte flipped in the local-header name of a compressed entry (libtorch's zip reader does not read it; Python's does)
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
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


class Detached(torch.nn.Module):
    """PairNet with its output detached: no gradient reaches the positions (must be refused, never a zero force)."""

    def __init__(self):
        super().__init__()
        self.net = PairNet(3, torch.float64, 5)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.net(positions, box).detach()


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


def rezipped(data: bytes, edit) -> bytes:
    """The archive with each entry's bytes passed through edit(name, bytes) (fresh zip CRCs)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename.split("/", 1)[-1], zin.read(info)))
    return out.getvalue()


def save_v2(out: Path) -> None:
    """Format-2 models written by latentbias' own writer (so the C++ check follows the Python format)."""
    try:
        from latentbias.export import _archive_with_checksums
    except ImportError as exc:  # the C++ test prints SKIP for these files
        print(f"latentbias does not import ({exc}): format-2 test models not written")
        return
    meta = {
        "format": "latentbias-model", "format_version": 2, "n_atoms": N_ATOMS, "latent_dim": 3, "dtype": "float64",
        "z_range": [[-1.2345678901234567, 2.5e-05], [1e16, 0.1], [-0.0, 3.0]],
        "note": "caf\u00e9 \u2603 \U0001F600 \"quoted\" back\\slash",
        "architecture": {"latent_dim": 99, "n_atoms": 1},
    }
    data = _archive_with_checksums(torch.jit.script(PairNet(3, torch.float64, 1)), meta)
    (out / "model_v2.pt").write_bytes(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = next(i for i in zf.infolist() if i.filename.split("/", 1)[-1] == "data/0")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the entry's data (stored, not compressed)
    flipped = bytearray(data)
    flipped[start + 3] ^= 0x01
    (out / "model_v2_flipped.pt").write_bytes(bytes(flipped))

    def edit_meta(name: str, b: bytes) -> bytes:
        return b.replace(b"0.1", b"0.2") if name == "extra/latentbias.json" else b

    def edit_weight(name: str, b: bytes) -> bytes:
        return b[:3] + bytes([b[3] ^ 0x01]) + b[4:] if name == "data/0" else b

    def downgrade(name: str, b: bytes) -> bytes:
        return b.replace(b'"format_version": 2', b'"format_version": 1') if name == "extra/latentbias.json" else b

    (out / "model_v2_meta_edited.pt").write_bytes(rezipped(data, edit_meta))
    (out / "model_v2_weights_edited.pt").write_bytes(rezipped(data, edit_weight))
    (out / "model_v2_downgraded.pt").write_bytes(rezipped(data, downgrade))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        info = next((i for i in infos if i.compress_type == zipfile.ZIP_DEFLATED), infos[0])
    local_name = bytearray(data)
    local_name[info.header_offset + 30 + 3] ^= 0x01  # an ASCII letter of the name: a different, valid name
    (out / "model_v2_local_name.pt").write_bytes(bytes(local_name))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    save(PairNet(3, torch.float64, 1), out / "model_d3.pt", 3, "float64")
    save(PairNet(3, torch.float32, 1), out / "model_d3_f32.pt", 3, "float32")
    save(PairNet(2, torch.float64, 2), out / "model_pbc.pt", 2, "float64")
    save(PairNet(3, torch.float64, 3), out / "model_bad_dim.pt", 2, "float64")
    save(PairNet(2, torch.float64, 4), out / "model_nometa.pt", None, "float64")
    save(Detached(), out / "model_detached.pt", 3, "float64")
    save_v2(out)
    print(f"wrote test models to {out}")


if __name__ == "__main__":
    main()
