"""No silent zero or non-finite forces, no crash (issue 9 items 1-2).

Reproducers from the fault trial: a model whose output has no gradient (detached, integer counts, a constant
component) recorded bias energy while the native force applied exactly zero force; coincident atoms gave NaN forces
with a finite energy; NaN / negative force constants were accepted by ``Context.setParameter``; grid sizes whose
product overflows segfaulted at Context creation; corrupted serialized forces must raise, never crash.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from torch import Tensor

import latentbias as lb
from latentbias import native
from latentbias.bias.restraint import LatentRestraint
from latentbias.export import save_cv_module

from test_export_forces import bare_system, make_context

PLATFORMS = ["Reference", "CPU"]

needs_native = pytest.mark.skipif(not native.is_available(), reason=f"native plugin not built: "
                                                                    f"{native.unavailable_reason()}")


class Detached(torch.nn.Module):
    """z0 = |x0 - x1| computed on detached positions: no gradient reaches the positions."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.detach().to(torch.float64)
        return torch.linalg.norm(p[0] - p[1]).reshape(1)


class ContactCount(torch.nn.Module):
    """A hard contact count (boolean comparison): piecewise constant, no gradient."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        d = torch.linalg.norm(positions[0] - positions[1:], dim=-1)
        return (d < 0.5).sum().to(torch.float64).reshape(1)


class HalfConstant(torch.nn.Module):
    """z0 = |x0 - x1| (fine), z1 = a constant (no gradient)."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        d = torch.linalg.norm(positions[0] - positions[1]).to(torch.float64)
        return torch.stack([d, torch.ones_like(d).detach()])


class Distance(torch.nn.Module):
    """z0 = |x0 - x1| (nm): fine everywhere except at coincident atoms."""

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        p = positions.to(torch.float64)
        return torch.sqrt(((p[0] - p[1]) ** 2).sum()).reshape(1)


class WrongShape(torch.nn.Module):
    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return positions[:2, 0].to(torch.float64).reshape(1, 2)


def _save(module, path, latent_dim=1, n_atoms=4):
    return save_cv_module(module, path, n_atoms=n_atoms, latent_dim=latent_dim)


@pytest.mark.parametrize("module,latent_dim,match", [
    (Detached(), 1, r"does not depend differentiably"),
    (ContactCount(), 1, r"does not depend differentiably"),
    (HalfConstant(), 2, r"z\[1\] does not depend differentiably"),
    (WrongShape(), 2, r"must return z of shape \(2,\)"),
])
def test_load_refuses_models_without_gradient_or_with_wrong_shape(tmp_path, module, latent_dim, match):
    path = _save(module, tmp_path / "m.pt", latent_dim)
    with pytest.raises(ValueError, match=match) as info:
        lb.load_model(path)
    assert str(path) in str(info.value)


def test_load_accepts_a_differentiable_model(tmp_path):
    model = lb.load_model(_save(Distance(), tmp_path / "ok.pt"))
    assert model.latent_dim == 1


def _native_grid_force(path_bytes, n_atoms=4):
    force = native.load().LatentBiasForce.fromModelData(path_bytes)
    force.addGridDimension(0, 0.0, 2.0, 21, False)
    force.setGridValues([float(v) for v in np.linspace(0.0, 20.0, 21)])  # slope 10 kJ/mol per nm
    return force


def _positions():
    return np.array([[0.0, 0.0, 0.0], [0.5, 0.1, 0.0], [1.0, 1.0, 1.0], [1.5, 0.2, 0.3]])


@needs_native
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("module", [Detached(), ContactCount()], ids=["detached", "integer-count"])
def test_native_force_refuses_a_model_without_gradient(tmp_path, platform, module):
    """Bypassing load_model (raw bytes into fromModelData): the force raises instead of applying zero force."""
    path = _save(module, tmp_path / "m.pt")
    system = bare_system(4)
    system.addForce(_native_grid_force(path.read_bytes()))
    ctx, _ = make_context(system, _positions(), platform)
    with pytest.raises(openmm.OpenMMException, match="differentiabl"):
        ctx.getState(getForces=True)


@needs_native
@pytest.mark.parametrize("platform", PLATFORMS)
def test_native_force_names_atoms_with_non_finite_forces(tmp_path, platform):
    """Coincident atoms 0 and 1: d|r|/dr is 0/0. An exception names the atoms instead of NaN forces."""
    path = _save(Distance(), tmp_path / "d.pt")
    system = bare_system(4)
    force = native.load().LatentBiasForce.fromModelData(path.read_bytes())
    force.addRestraint(0, "d0", 0.3, "kd", 100.0, 0.0, float("-inf"), float("inf"), 0.0)
    system.addForce(force)
    pos = _positions()
    pos[1] = pos[0]
    ctx, _ = make_context(system, pos, platform)
    with pytest.raises(openmm.OpenMMException, match=r"not finite on 2 atom\(s\) \(indices 0, 1\)"):
        ctx.getState(getForces=True)
    pos[1] = [0.4, 0.0, 0.0]  # moving the atom apart makes the same Context usable again
    ctx.setPositions(pos)
    f = ctx.getState(getForces=True).getForces(asNumpy=True)._value
    assert np.all(np.isfinite(f)) and abs(f[0, 0]) > 1.0


@needs_native
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name,value,match", [
    ("kd", float("nan"), "force constant parameter 'kd' is nan"),
    ("kd", -5.0, "force constant parameter 'kd' is -5"),
    ("d0", float("inf"), "centre parameter 'd0' is inf"),
])
def test_native_force_validates_parameters_set_in_the_context(tmp_path, platform, name, value, match):
    path = _save(Distance(), tmp_path / "d.pt")
    system = bare_system(4)
    force = native.load().LatentBiasForce.fromModelData(path.read_bytes())
    force.addRestraint(0, "d0", 0.3, "kd", 100.0, 0.0, float("-inf"), float("inf"), 0.0)
    system.addForce(force)
    ctx, _ = make_context(system, _positions(), platform)
    ctx.getState(getEnergy=True)
    ctx.setParameter(name, value)
    with pytest.raises(openmm.OpenMMException, match=match):
        ctx.getState(getEnergy=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_restraint_setters_validate(tmp_path, bad):
    model = lb.load_model(_save(Distance(), tmp_path / "d.pt"))
    system = bare_system(4)
    restraint = LatentRestraint(model, system, centers=[0.3], forceConstants=0.0, backend="torchforce")
    ctx, _ = make_context(system, _positions(), "Reference")
    with pytest.raises(ValueError, match="forceConstants"):
        restraint.setForceConstants(ctx, [bad])
    if bad != -1.0:
        with pytest.raises(ValueError, match="centers"):
            restraint.setCenters(ctx, [bad])
    with pytest.raises(ValueError, match="centers"):
        LatentRestraint(model, bare_system(4), centers=[float("nan")], forceConstants=1.0, backend="torchforce")


@needs_native
def test_grid_size_overflow_is_refused(tmp_path):
    path = _save(HalfConstant(), tmp_path / "m.pt", latent_dim=2)
    force = native.load().LatentBiasForce.fromModelData(path.read_bytes())
    force.addGridDimension(0, 0.0, 1.0, 2048, False)
    with pytest.raises(Exception, match="larger than the 4194304 points allowed"):
        force.addGridDimension(1, 0.0, 1.0, 2**31 - 1, False)
    with pytest.raises(Exception, match="larger than the 4194304 points allowed"):
        force.addGridDimension(1, 0.0, 1.0, 4096, False)


FUZZ = textwrap.dedent("""
    import random, sys
    import numpy as np
    import openmm
    import latentbias  # noqa: F401  (loads the plugin)
    from latentbias import native
    lbp = native.load()
    xml = open(sys.argv[1]).read()
    rng = random.Random(int(sys.argv[2]))
    digits = "0123456789-e.+"
    raised = ok = 0
    for trial in range(int(sys.argv[3])):
        chars = list(xml)
        # corrupt numbers outside the base64 model blob (sizes, ranges, counts, parameters, values): what a crafted
        # or bit-rotted file changes; a changed blob is caught by its checksum (tested separately)
        a = xml.index('model="') + 7
        b = xml.index('"', a)
        outside = [i for i in range(len(xml)) if not a <= i < b]
        for _ in range(rng.randint(1, 6)):
            i = rng.choice(outside)
            chars[i] = rng.choice(digits) if chars[i] in digits else chars[i]
            if rng.random() < 0.3:
                chars[i] = rng.choice(digits)
        text = "".join(chars)
        for big in ("2147483647", "99999999999", "-1", "nan", "inf"):
            if rng.random() < 0.05:
                text = text.replace('size="21"', f'size="{big}"', 1)
        try:
            force = openmm.XmlSerializer.deserialize(text)
            system = openmm.System()
            for _ in range(4):
                system.addParticle(1.0)
            system.addForce(force)
            ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
            ctx.setPositions(np.array([[0, 0, 0], [0.5, 0.1, 0], [1, 1, 1], [1.5, 0.2, 0.3]], float))
            ctx.getState(getEnergy=True, getForces=True)
            ok += 1
        except Exception:
            raised += 1
    print("FUZZ-DONE", ok, raised)
""")


@needs_native
def test_corrupted_serialized_forces_raise_and_never_crash(tmp_path):
    """Random digit corruption of a serialized LatentBiasForce (sizes, ranges, values, parameters): every trial
    either works or raises a Python exception. Run in a subprocess so that a crash fails this test instead of
    killing the test session."""
    path = _save(Distance(), tmp_path / "d.pt")
    force = _native_grid_force(path.read_bytes())
    force.addRestraint(0, "d0", 0.3, "kd", 100.0, 0.0, float("-inf"), float("inf"), 0.0)
    xml = tmp_path / "force.xml"
    xml.write_text(openmm.XmlSerializer.serialize(force))
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    result = subprocess.run([sys.executable, str(script), str(xml), "7", "150"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"fuzzing crashed (rc {result.returncode}):\n{result.stderr[-2000:]}"
    ok, raised = map(int, result.stdout.split("FUZZ-DONE")[1].split())
    assert ok + raised == 150 and raised > 0


# ----------------------------------------------------------------------------------------------- integrity


def _flip(data: bytes, offset: int, n: int = 64) -> bytes:
    b = bytearray(data)
    for i in range(offset, min(offset + n, len(b))):
        b[i] ^= 0xFF
    return bytes(b)


def test_model_file_checksums_catch_flipped_bytes(tmp_path):
    """64 flipped bytes anywhere in a model file (weights, code, metadata, zip headers) are refused at load with
    an error naming the file; an intact file loads."""
    import zipfile

    path = _save(Distance(), tmp_path / "d.pt")
    data = path.read_bytes()
    lb.load_model(path)
    with zipfile.ZipFile(path) as zf:
        offsets = {info.filename: info.header_offset for info in zf.infolist()}
    targets = [off + 100 for name, off in offsets.items()]  # inside each entry (header + data)
    targets += [len(data) // 3, len(data) // 2, len(data) - 200]
    for k, offset in enumerate(targets):
        bad = tmp_path / f"bad{k}.pt"
        bad.write_bytes(_flip(data, offset))
        with pytest.raises(ValueError, match=str(bad)):
            lb.load_model(bad)


def test_model_file_checksums_catch_a_changed_metadata_value(tmp_path):
    """An edit that keeps the JSON valid (the atom count) does not pass either."""
    path = _save(Distance(), tmp_path / "d.pt")
    data = path.read_bytes()
    assert data.count(b'"n_atoms": 4') == 1
    edited = tmp_path / "edited.pt"
    edited.write_bytes(data.replace(b'"n_atoms": 4', b'"n_atoms": 5'))
    with pytest.raises(ValueError, match="does not match the checksum|not a TorchScript file"):
        lb.load_model(edited)


def _format_1(data: bytes, keep_checksums: bool) -> bytes:
    """The model file re-zipped with its metadata's format_version set to 1, with or without its checksums."""
    import io
    import json
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if info.filename.endswith("/extra/latentbias.json"):
                meta = json.loads(body)
                meta["format_version"] = 1
                if not keep_checksums:
                    del meta["checksums"]
                body = json.dumps(meta).encode()
            zout.writestr(info.filename, body)
    return out.getvalue()


def test_model_format_version_edited_to_1_is_refused_and_a_format_1_file_warns(tmp_path, caplog):
    """The downgrade hole: setting format_version to 1 skipped every checksum. A format-1 file that holds the
    checksums (only an edit makes one) is refused naming the file; a genuine format-1 file (no checksums) loads with
    a WARNING naming the file, saying it is unverified and how to re-export it; re-exporting it gives format 2."""
    import logging

    from latentbias.export import FORMAT_VERSION, archive_bytes

    path = _save(Distance(), tmp_path / "d.pt")
    data = path.read_bytes()
    edited = tmp_path / "downgraded.pt"
    edited.write_bytes(_format_1(data, keep_checksums=True))
    with pytest.raises(ValueError, match=re.escape(str(edited)) + ".*format_version was edited.*re-export"):
        lb.load_model(edited)
    old = tmp_path / "format1.pt"
    old.write_bytes(_format_1(data, keep_checksums=False))
    with caplog.at_level(logging.WARNING, logger="latentbias.export"):
        model = lb.load_model(old)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(old) in m and "loaded unverified" in m and "archive_bytes" in m for m in warned), warned
    caplog.clear()
    again = tmp_path / "reexported.pt"
    again.write_bytes(archive_bytes(model))
    with caplog.at_level(logging.WARNING, logger="latentbias.export"):
        assert lb.load_model(again).metadata["format_version"] == FORMAT_VERSION
    assert not caplog.records


@needs_native
def test_serialized_force_checksums(tmp_path, capfd):
    """A serialized LatentBiasForce whose model bytes or grid values were changed is refused; a force whose version
    was edited to 1 (which skips both checksums) while it holds them is refused; a genuine version-1 force (no
    checksums) is still read, with a warning on stderr that it is unverified."""
    path = _save(Distance(), tmp_path / "d.pt")
    force = _native_grid_force(path.read_bytes())
    xml = openmm.XmlSerializer.serialize(force)
    assert 'version="2"' in xml and "modelChecksum" in xml
    openmm.XmlSerializer.deserialize(xml)
    model_start = xml.index('model="') + len('model="') + 400
    letter = "A" if xml[model_start] != "A" else "B"
    with pytest.raises(Exception, match="model does not match its checksum"):
        openmm.XmlSerializer.deserialize(xml[:model_start] + letter + xml[model_start + 1:])
    with pytest.raises(Exception, match="grid values do not match their checksum"):
        openmm.XmlSerializer.deserialize(xml.replace('values="0 1 2', 'values="0 1.5 2', 1))
    downgraded = xml.replace('version="2"', 'version="1"', 1)
    with pytest.raises(Exception, match="says version 1, which carries no checksums, but it holds them"):
        openmm.XmlSerializer.deserialize(downgraded)
    with pytest.raises(Exception, match="its version was edited"):  # the grid checksum alone also betrays the edit
        openmm.XmlSerializer.deserialize(re.sub(r' modelChecksum="[^"]*"', "", downgraded))
    old = re.sub(r' (model|values)Checksum="[^"]*"', "", downgraded)
    assert "Checksum" not in old
    capfd.readouterr()
    assert native.as_latent_bias_force(openmm.XmlSerializer.deserialize(old)).getNumGridDimensions() == 1
    err = capfd.readouterr().err
    assert "WARNING: a serialized force of version 1 carries no checksums" in err and "unverified" in err, err
    openmm.XmlSerializer.deserialize(xml)
    assert "WARNING" not in capfd.readouterr().err  # a version-2 force (verified model) warns nothing
