"""Estimators, fits and bias energies against references that are exact by construction (issue 15, item 1).

Each test here was written to kill a bug that survived the rest of the suite (a planted mutation); the reference is
computed independently of the code under test (closed forms, pymbar's own weights, mdtraj's QCP superposition, an
OpenMM Context), never by re-running the implementation's formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf, logsumexp

from latentbias.analysis import basin_free_energy_difference, free_energy_surface, kt_kjmol, mbar_logweights
from latentbias.analysis.fes import block_labels

R_KJMOL = 0.00831446261815324  # kJ/(mol K), CODATA 2018 (the value OpenMM uses)


# ------------------------------------------------------------------------------------- FES at T != 300 K


def harmonic_bin_fes(edges: np.ndarray, k: float, temperature: float) -> np.ndarray:
    """Exact bin-averaged F of U = k x^2 / 2 at ``temperature``: -kT ln(P_bin / width) from the Gaussian CDF."""
    sigma = math.sqrt(R_KJMOL * temperature / k)
    cdf = 0.5 * (1.0 + erf(edges / (sigma * math.sqrt(2.0))))
    f = -R_KJMOL * temperature * np.log(np.diff(cdf) / np.diff(edges))
    return f - f.min()


@pytest.mark.parametrize("temperature", [200.0, 450.0])
def test_fes_at_other_temperatures_matches_exact_bin_average(temperature):
    """Unbiased Boltzmann samples of U = k x^2/2 at T: F must be U's bin average at T (a kT fixed at 300 K gives
    F scaled by 300/T, off by ~1.7-2.5 kJ/mol at the range edge). 400 000 samples: statistical error per bin
    < 0.05 kJ/mol where F < 6 kJ/mol; tolerance 0.12 kJ/mol."""
    k = 400.0  # kJ/mol/nm^2
    rng = np.random.default_rng(15)
    sigma = math.sqrt(R_KJMOL * temperature / k)
    x = rng.normal(0.0, sigma, 400_000)
    lim = 2.2 * sigma
    fes = free_energy_surface(x, bins=22, range=(-lim, lim), temperature=temperature)
    ref = harmonic_bin_fes(fes.edges[0], k, temperature)
    assert fes.temperature == temperature
    mask = ref < 6.0
    np.testing.assert_allclose(fes.free_energy[mask], ref[mask], atol=0.12)


def test_fes_temperature_as_quantity_and_deterministic_quadrature():
    """Frames on a fine uniform grid weighted by exp(-U/kT) at T = 375 K (given as a Quantity) are a midpoint
    quadrature of the bin integrals: F equals -kT ln(mean_bin exp(-U/kT)) to 1e-9 kJ/mol."""
    from openmm import unit

    temperature = 375.0
    kt = R_KJMOL * temperature
    edges = np.linspace(-0.8, 0.8, 9)
    m = 400  # points per bin, placed at the midpoints of m sub-cells
    x = np.concatenate([a + (np.arange(m) + 0.5) * (b - a) / m for a, b in zip(edges[:-1], edges[1:])])
    u = 10.0 * (4.0 * x**2 - 1.0) ** 2
    fes = free_energy_surface(x, -u / kt, bins=edges, temperature=temperature * unit.kelvin, n_blocks=2)
    ref = np.array([-kt * np.log(np.mean(np.exp(-u[i * m:(i + 1) * m] / kt))) for i in range(len(edges) - 1)])
    np.testing.assert_allclose(fes.free_energy, ref - ref.min(), atol=1e-9)


# -------------------------------------------------------------------- MBAR: unequal N_k, unsampled target


def _pymbar_weights(u_kn: np.ndarray, n_k: np.ndarray) -> np.ndarray:
    from latentbias.analysis.reweight import quiet_pymbar

    with quiet_pymbar():
        from pymbar import MBAR

        mbar = MBAR(u_kn, n_k, solver_protocol="robust")
    return np.asarray(mbar.weights())  # shape (N, K): W_nk, columns sum to 1


def test_mbar_unequal_counts_and_unsampled_target_equal_pymbar_weights():
    """Three harmonic umbrellas with N_k = 60, 400, 1500 plus a zero-count state; the target is a fourth,
    unsampled harmonic state. Reference: pymbar's own W_nk for the target column when the target is added as a
    state with N = 0. Agreement to 1e-6 relative in every weight (both solve the same equations to ~1e-10).
    A denominator without the N_k factor changes the weights by O(1) factors here."""
    kt = kt_kjmol(300.0)
    beta = 1.0 / kt
    k0 = 200.0  # unbiased U0 = k0 x^2 / 2
    centers, kb = np.array([-0.3, 0.0, 0.35]), np.array([500.0, 300.0, 800.0])
    n_k = np.array([60, 400, 1500])
    rng = np.random.default_rng(7)
    xs = []
    for c, kk, n in zip(centers, kb, n_k):  # U0 + bias is Gaussian: sample it exactly
        mean, var = kk * c / (k0 + kk), kt / (k0 + kk)
        xs.append(rng.normal(mean, math.sqrt(var), n))
    x = np.concatenate(xs)
    bias = 0.5 * kb[:, None] * (x[None, :] - centers[:, None]) ** 2
    # a 4th umbrella that has no frames (N = 0) may be part of the states
    extra = 0.5 * 650.0 * (x - 0.6) ** 2
    u_kn = beta * np.vstack([bias, extra])
    counts = np.append(n_k, 0)
    target = beta * 0.5 * 900.0 * (x - 0.2) ** 2  # unsampled target state (bias only; U0 is common)

    logw, f_k, _ = mbar_logweights(u_kn, counts, target_reduced_potential=target)
    w_ref = _pymbar_weights(np.vstack([u_kn, target]), np.append(counts, 0))[:, -1]
    np.testing.assert_allclose(np.exp(logw), w_ref, rtol=1e-6, atol=1e-14)
    assert logsumexp(logw) == pytest.approx(0.0, abs=1e-12)
    # f_k of the sampled states (relative to state 0) against pymbar on the same states
    from latentbias.analysis.reweight import quiet_pymbar
    from pymbar import MBAR

    with quiet_pymbar():
        ref_f = MBAR(u_kn, counts, solver_protocol="robust").compute_free_energy_differences()["Delta_f"][0]
    np.testing.assert_allclose(f_k, ref_f, atol=1e-7)
    # and the physics: the target ensemble (U0 + 450 (x-0.2)^2) is Gaussian with mean 900*0.2/(200+900)
    mean = float(np.sum(np.exp(logw) * x))
    assert mean == pytest.approx(900.0 * 0.2 / 1100.0, abs=0.01)


def test_mbar_unbiased_target_with_unequal_counts_against_pymbar():
    """Default target (zeros = the unbiased state) with strongly unequal N_k, against pymbar's W_nk of an
    unbiased column added with N = 0."""
    kt = kt_kjmol(310.0)
    rng = np.random.default_rng(3)
    n_k = np.array([900, 40, 250, 5])
    centers = np.array([-0.4, -0.1, 0.2, 0.5])
    kb = 300.0
    x = np.concatenate([rng.normal(c * kb / (100.0 + kb), math.sqrt(kt / (100.0 + kb)), n) for c, n in zip(centers, n_k)])
    u_kn = 0.5 * kb * (x[None, :] - centers[:, None]) ** 2 / kt
    logw, _, _ = mbar_logweights(u_kn, n_k)
    w_ref = _pymbar_weights(np.vstack([u_kn, np.zeros(len(x))]), np.append(n_k, 0))[:, -1]
    np.testing.assert_allclose(np.exp(logw), w_ref, rtol=1e-6, atol=1e-14)


# --------------------------------------------------------------------- block errors known exactly


def test_fes_block_error_is_standard_error_of_exact_block_estimates():
    """Four contiguous blocks of 50 frames; block b puts c_b of its frames in bin 0 and the rest in bin 1, so
    F_b(bin) = -kT ln(p_b / width) exactly. The error must be std(F_b, ddof=1)/sqrt(4) to rel 1e-12 (n-1
    variance: dividing by n instead is off by sqrt(3/4))."""
    temperature = 330.0
    kt = R_KJMOL * temperature
    n_blocks, per_block = 4, 50
    c = np.array([10, 25, 32, 40])
    cv = np.concatenate([np.where(np.arange(per_block) < cb, 0.25, 0.75) for cb in c])
    fes = free_energy_surface(cv, bins=2, range=(0.0, 1.0), temperature=temperature, n_blocks=n_blocks)
    width = 0.5
    for b, p in ((0, c / per_block), (1, 1.0 - c / per_block)):
        f_b = -kt * np.log(p / width)
        expected = np.sqrt(np.sum((f_b - f_b.mean()) ** 2) / (n_blocks - 1) / n_blocks)
        assert fes.error[b] == pytest.approx(expected, rel=1e-12)
    # the same with explicit labels interleaving the frames (blocks need not be contiguous)
    labels = np.repeat(np.arange(n_blocks), per_block)
    perm = np.random.default_rng(0).permutation(len(cv))
    fes2 = free_energy_surface(cv[perm], bins=2, range=(0.0, 1.0), temperature=temperature, blocks=labels[perm])
    np.testing.assert_allclose(fes2.error, fes.error, rtol=1e-12)
    np.testing.assert_allclose(fes2.free_energy, fes.free_energy, rtol=1e-12, atol=1e-12)


def test_basin_difference_block_error_is_exact():
    """Per block b: P_A = a_b/m, P_B = (m - a_b)/m so dF_b = -kT ln((m - a_b)/a_b); error = std(ddof=1)/sqrt(n)."""
    temperature = 280.0
    kt = R_KJMOL * temperature
    m = 40
    a = np.array([8, 12, 15, 20, 22])
    cv = np.concatenate([np.where(np.arange(m) < ab, -1.0, 1.0) for ab in a])
    df, err = basin_free_energy_difference(cv, None, cv < 0, cv > 0, temperature=temperature, n_blocks=len(a))
    per_block = -kt * np.log((m - a) / a)
    total_a = a.sum()
    assert df == pytest.approx(-kt * np.log((len(cv) - total_a) / total_a), rel=1e-12)
    expected = np.sqrt(np.sum((per_block - per_block.mean()) ** 2) / (len(a) - 1) / len(a))
    assert err == pytest.approx(expected, rel=1e-12)


def test_block_labels_for_pooled_windows():
    labels = block_labels([4, 6], 2)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 0, 0, 0, 1, 1, 1])


# ---------------------------------------------------------------- Kabsch: mirror images, proper rotations


def _chiral_reference() -> np.ndarray:
    """Six atoms, no symmetry plane (a chiral arrangement), nm, centred."""
    ref = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0], [0.2, 0.14, 0.0], [0.35, 0.16, 0.08], [0.1, -0.12, 0.11],
                    [-0.09, 0.05, -0.13]])
    return ref - ref.mean(0)


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aligned_coordinates_of_a_mirror_image_use_a_proper_rotation(seed):
    """The mirror image of a chiral reference cannot be superposed by a rotation. The fit must still be a proper
    rotation (det +1): the aligned coordinates equal mdtraj's superposition (QCP, rotations only) and their RMSD
    equals mdtraj.rmsd, which is > 0. A fit that allows reflections reaches RMSD 0 instead."""
    import mdtraj as md
    import torch

    from latentbias import AlignedCoordinates

    ref = _chiral_reference()
    mirror = ref * np.array([-1.0, 1.0, 1.0])
    mobile = mirror @ _rotation(seed).T + np.array([1.0, -2.0, 0.5])
    feat = AlignedCoordinates(np.arange(6), ref).double()
    out = feat(torch.as_tensor(mobile)).detach().numpy().reshape(6, 3)

    centred = mobile - mobile.mean(0)
    fit, *_ = np.linalg.lstsq(centred, out, rcond=None)  # out = centred @ fit exactly
    np.testing.assert_allclose(fit.T @ fit, np.eye(3), atol=1e-10)
    assert np.linalg.det(fit) == pytest.approx(1.0, abs=1e-10)

    top = md.Topology()
    chain = top.add_chain()
    for _ in range(6):
        top.add_atom("C", md.element.carbon, top.add_residue("X", chain))
    t_ref, t_mob = md.Trajectory(ref[None], top), md.Trajectory(mobile[None], top)
    rmsd_md = float(md.rmsd(t_mob, t_ref)[0])
    rmsd_ours = float(np.sqrt(np.mean(np.sum((out - ref) ** 2, axis=1))))
    assert rmsd_md > 0.02
    assert rmsd_ours == pytest.approx(rmsd_md, abs=2e-6)  # mdtraj works in float32
    t_mob.superpose(t_ref)
    np.testing.assert_allclose(out, t_mob.xyz[0] - t_mob.xyz[0].mean(0), atol=2e-6)


def test_kabsch_align_on_batches_of_mirror_images_is_a_rotation():
    """geometry.kabsch_align directly, batched, float64: every aligned frame has the input's inter-atomic
    distances and chirality (signed volume of the first four atoms) — a reflection would flip the sign."""
    import torch

    from latentbias.geometry import kabsch_align

    ref = _chiral_reference()
    frames = np.stack([(ref * [1.0, -1.0, 1.0]) @ _rotation(s).T for s in range(4)] + [ref @ _rotation(9).T])
    out = kabsch_align(torch.as_tensor(frames), torch.as_tensor(ref)).numpy()

    def signed_volume(x):
        return np.linalg.det(np.stack([x[..., 1, :] - x[..., 0, :], x[..., 2, :] - x[..., 0, :],
                                       x[..., 3, :] - x[..., 0, :]], axis=-2))

    np.testing.assert_allclose(signed_volume(out), signed_volume(frames), rtol=1e-10)
    d_in = np.linalg.norm(frames[:, :, None] - frames[:, None], axis=-1)
    d_out = np.linalg.norm(out[:, :, None] - out[:, None], axis=-1)
    np.testing.assert_allclose(d_out, d_in, atol=1e-12)
    np.testing.assert_allclose(out[-1], ref, atol=1e-12)  # a rotated copy of the reference lands on it


# -------------------------------------------------- campaign bias states beyond the grid edges vs a Context


def _grid_backends():
    from latentbias import native
    from latentbias.bias.backends import CustomCVBackend

    out = [pytest.param(CustomCVBackend, id="customcv")]
    if native.is_available():
        from latentbias.bias.fused import FusedBackend

        out.append(pytest.param(FusedBackend, id="native"))
    return out


@pytest.mark.parametrize("scale", [1.0, 0.35])
@pytest.mark.parametrize("backend", _grid_backends())
def test_bias_state_energy_beyond_grid_edges_equals_context_energy(tmp_path, backend, scale):
    """A metadynamics BiasState (what the campaign's MBAR uses) evaluated on points beyond the grid edges, and
    at interior points, must equal the energy of the bias force in an OpenMM Context (Reference platform): the
    scaled table at the clamped point plus the harmonic walls (not scaled). The grid holds a plane, which both the
    Context's splines and BiasState's multilinear interpolation reproduce exactly, so any difference is a bug.
    Tolerance 1e-6 kJ/mol (float64 model)."""
    import openmm
    from openmm import unit

    from latentbias.bias.grid import BiasGrid, LatentVariable
    from latentbias.campaign.weights import BiasState

    from toy import identity_model

    model_path = identity_model(tmp_path / "xy.pt", 1, 2)
    from latentbias import load_model

    mf = load_model(model_path)
    variables = [LatentVariable(0, -0.5, 0.7, 0.1, gridWidth=13), LatentVariable(1, -0.4, 0.4, 0.1, gridWidth=9)]
    grid = BiasGrid(variables)
    gx, gy = np.meshgrid(*grid.axes, indexing="ij")
    values = 3.0 + 4.0 * gx - 2.5 * gy
    wall_k = 750.0
    system = openmm.System()
    system.addParticle(1.0)
    bk = backend(mf, system, grid, wall_k, None)
    bk.set_grid(values, None)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    bk.set_scale(scale, ctx)
    points = np.array([[0.95, 0.1], [-0.8, -0.1], [0.2, 0.65], [0.1, -0.9], [1.1, 0.7], [-0.7, -0.6], [0.9, -0.55],
                       [0.13, 0.05], [-0.31, 0.27]])
    state = BiasState("metad", 0, variables=[v.toDict() for v in variables], grid=values, wall_k=wall_k, scale=scale)
    ours = state.energy(points)
    for p, e in zip(points, ours):
        ctx.setPositions(np.array([[p[0], p[1], 0.0]]) * unit.nanometer)
        e_ctx = bk.energy(ctx)
        assert e == pytest.approx(e_ctx, abs=1e-6), (p, e, e_ctx)
    # and the walls really act there: beyond the edge the energy exceeds the scaled edge value of the table
    over = 0.95 - 0.7
    assert ours[0] == pytest.approx(scale * (3.0 + 4.0 * 0.7 - 2.5 * 0.1) + 0.5 * wall_k * over**2, abs=1e-9)
