"""Import safety: openmm imported first still works; known-bad version pairs are refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from latentbias._environment import check_stack_versions


def run_python(code: str, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "snippet.py"  # a file, so TorchScript can read the source
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)


def test_openmm_imported_first_then_torchforce_context_works(tmp_path):
    proc = run_python(
        """
        import openmm                      # the trap: openmm before torch
        import latentbias                  # must repair the openmm-torch plugin
        import torch, openmm
        from latentbias._environment import import_openmmtorch

        class Energy(torch.nn.Module):
            def forward(self, positions):
                return (positions ** 2).sum()

        system = openmm.System()
        system.addParticle(1.0)
        system.addForce(import_openmmtorch().TorchForce(torch.jit.script(Energy())))
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions([openmm.Vec3(0.1, 0.2, 0.3)])
        e = ctx.getState(getEnergy=True).getPotentialEnergy()._value
        print("ENERGY", round(e, 9))
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ENERGY 0.14" in proc.stdout


def test_known_bad_pair_refused_at_import(tmp_path):
    proc = run_python(
        """
        import torch, openmm
        openmm.version.version = "8.6.1"   # pretend the segfaulting OpenMM is installed
        import latentbias
        """,
        tmp_path,
    )
    assert proc.returncode != 0
    assert "known-bad pair" in proc.stderr and "openmm>=8.5,<8.6" in proc.stderr


@pytest.mark.parametrize(
    "omm, ot, bad",
    [("8.5.2", "1.5", False), ("8.6.0", "1.5", True), ("8.7.1.dev0", "1.5.0", True), ("8.6.0", None, False),
     ("8.6.0", "1.6", False)],
)
def test_check_stack_versions(omm, ot, bad):
    if bad:
        with pytest.raises(ImportError, match="segfaults"):
            check_stack_versions(omm, ot)
    else:
        check_stack_versions(omm, ot)
