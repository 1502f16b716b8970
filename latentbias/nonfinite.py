"""Non-finite latent values, forces and positions are errors that name the atoms or the latent component (issue 9).

The native ``LatentBiasForce`` checks its own forces in C++. The openmm-torch routes (the ``TorchForce`` of a
:class:`~latentbias.bias.restraint.LatentRestraint`, the per-component ``TorchForce`` collective variables of the
``CustomCVForce`` backend) evaluate the modules latentbias builds around the model; those call
:func:`check_finite_evaluation` in TorchScript on every evaluation:

* a finite ``z`` so large that the bias energy overflows (an atom at 1e8 nm in a model whose ``z`` grows with
  distance) raises naming the component, its value and the atom farthest from the origin
  (:func:`check_finite_energy` on the restraint, :func:`check_latent_limit` on the ``CustomCVForce`` components,
  whose energy OpenMM computes from ``z``).
* a latent component that is not finite raises naming the atoms whose positions are not finite (the previous step
  applied non-finite forces to them, or the simulation exploded), or else the component and the atoms on which its
  gradient is not finite. Only ``z`` is checked on the healthy path (one sum); positions and the gradient are
  inspected on failure.
* a finite ``z`` whose gradient is not finite (the model's gradient is 0/0 for coincident atoms) raises in the same
  evaluation, naming the atoms and the latent components whose ``dz/dx`` is not finite there: these modules return
  their forces themselves (openmm-torch's ``TorchForce.setOutputsForces(True)``), computed with
  ``torch.autograd.grad`` (:func:`forces_of`, the backward pass openmm-torch would run) and checked with
  :func:`all_finite` (one sum when healthy), so a non-finite force is never applied and ``getState(getForces=True)``
  raises instead of returning NaN forces.

The campaign's segment runner (:func:`latentbias.campaign.simulate.record_segment`) checks every recorded frame
and, when positions went non-finite (whichever force noticed first, or none), raises :class:`NonFiniteBiasError`
naming the atoms and the model's diagnosis at the last finite frame (:func:`describe_nonfinite`).
"""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["NonFiniteBiasError", "atom_list", "check_finite_energy", "check_finite_evaluation", "check_latent_limit",
           "check_restraint_parameters", "all_finite", "describe_nonfinite", "forces_of", "gradient_report",
           "nonfinite_forces_message", "nonfinite_frame_error", "overflow_limit"]

#: atoms listed in a message (the count is always given)
MAX_LISTED = 20


class NonFiniteBiasError(FloatingPointError):
    """Positions, latent values or forces became NaN/inf; the message names the atoms or the latent component."""


def _atoms_text(mask: Tensor) -> str:
    idx: List[int] = torch.nonzero(mask).flatten().tolist()
    text = ", ".join([str(i) for i in idx[:20]])  # MAX_LISTED (TorchScript reads no module globals)
    if len(idx) > 20:
        text += ", ..."
    return str(len(idx)) + " atom(s) (indices " + text + ")"


def check_finite_evaluation(positions: Tensor, z: Tensor, components: Tensor) -> None:
    """TorchScript check of one force evaluation: when ``z`` is not finite, raise RuntimeError naming the atoms with
    non-finite positions (non-finite forces of the previous step moved them there), or else the non-finite latent
    components (model indices ``components``, shape=(len(z),)) and the atoms on which their gradient is not finite.

    The healthy path costs one sum over z and a float comparison (~1 µs); positions and the gradient are inspected
    only on failure. Non-finite positions of atoms the
    model does not read are left to the forces that read them."""
    total = float(z.detach().sum())
    if total - total == 0.0:  # finite (NaN/inf give NaN); torch.isfinite costs ~75 µs even on a scalar
        return
    bad_atoms = ~torch.isfinite(positions.detach()).all(-1)
    if bool(bad_atoms.any()):
        raise RuntimeError(
            "latentbias: positions are not finite on " + _atoms_text(bad_atoms) + ": the forces of the previous "
            "step were not finite on them (e.g. the model's gradient is 0/0 for coincident atoms) or the "
            "simulation exploded"
        )
    finite = torch.isfinite(z.detach())
    names: List[int] = components.index_select(0, torch.nonzero(~finite).flatten()).tolist()
    message = "latentbias: latent component(s) z" + str(names) + " not finite at these positions"
    if positions.requires_grad and z.requires_grad:
        grads = torch.autograd.grad([torch.where(finite, torch.zeros_like(z), z).sum()], [positions],
                                    retain_graph=True, allow_unused=True)
        g = grads[0]
        if g is not None:
            bad_grad = ~torch.isfinite(g).all(-1)
            if bool(bad_grad.any()):
                message += "; their gradient is not finite on " + _atoms_text(bad_grad)
    raise RuntimeError(message + ": the model's output is NaN/inf for this configuration")


def forces_of(positions: Tensor, energy: Tensor) -> Tensor:
    """TorchScript: the forces ``-dE/dx`` (shape=(n_atoms, 3), kJ/mol/nm, the dtype of ``positions``) of the scalar
    ``energy`` computed from ``positions`` (one backward pass, as openmm-torch would run it)."""
    grads = torch.autograd.grad([energy], [positions], allow_unused=True)
    g = grads[0]
    if g is None:  # the energy does not depend on the positions (refused at load; kept total for TorchScript)
        return torch.zeros_like(positions)
    return -g.detach()


def all_finite(values: Tensor) -> bool:
    """TorchScript: whether every value is finite. One sum and a float comparison when they are; the values are
    inspected only when the sum is not finite (a finite sum that overflowed is not an error)."""
    total = float(values.detach().sum())
    if total - total == 0.0:
        return True
    return not bool((~torch.isfinite(values.detach())).any())


def gradient_report(positions: Tensor, z: Tensor, components: Tensor) -> str:
    """TorchScript diagnosis of latent values ``z`` (model indices ``components``) computed from ``positions`` with
    the autograd graph: ``"dz[i]/dx is not finite on 2 atom(s) (indices 0, 1)"`` for each component whose gradient
    is not finite (the wording of :func:`describe_nonfinite`), joined by "; "; empty when all are finite."""
    parts: List[str] = []
    names: List[int] = components.tolist()
    for i in range(int(z.shape[0])):
        grads = torch.autograd.grad([z[i]], [positions], retain_graph=True, allow_unused=True)
        g = grads[0]
        if g is not None:
            bad = ~torch.isfinite(g).all(-1)
            if bool(bad.any()):
                parts.append("dz[" + str(names[i]) + "]/dx is not finite on " + _atoms_text(bad))
    return "; ".join(parts)


def nonfinite_forces_message(what: str, forces: Tensor, report: str) -> str:
    """TorchScript: the error of an evaluation whose ``forces`` are not finite while positions and ``z`` are
    (``report``: :func:`gradient_report`)."""
    return ("latentbias: the forces of " + what + " are not finite on "
            + _atoms_text(~torch.isfinite(forces.detach()).all(-1))
            + " at finite positions and finite latent values" + ("; " + report if report else "")
            + ": the model's gradient is NaN/inf at this configuration (e.g. 0/0 in a distance between coincident "
            "atoms); the forces were not applied")


def _farthest_atom(positions: Tensor) -> str:
    p = positions.detach().to(torch.float64)
    d = torch.sqrt((p * p).sum(-1))
    i = int(torch.argmax(d))
    return "the atom farthest from the origin is " + str(i) + " at " + str(float(d[i])) + " nm"


def check_finite_energy(positions: Tensor, z: Tensor, energy: Tensor, components: Tensor) -> None:
    """TorchScript check of a bias energy computed from finite latent values ``z`` (model indices ``components``):
    when it is not finite (``z`` so large that the energy overflows, e.g. an atom at 1e8 nm), raise RuntimeError
    naming the components, their values and the atom farthest from the origin. One float comparison when healthy."""
    e = float(energy.detach())
    if e - e == 0.0:
        return
    names: List[int] = components.tolist()
    values: List[float] = z.detach().to(torch.float64).reshape(-1).tolist()
    raise RuntimeError(
        "latentbias: the bias energy is " + str(e) + " at the finite latent values z" + str(names)
        + " = " + str(values) + " (too large: the energy overflows); " + _farthest_atom(positions)
        + ": the positions are far outside the model's domain (did the simulation explode?)"
    )


def check_latent_limit(positions: Tensor, z: Tensor, components: Tensor, limit: float) -> None:
    """TorchScript check that the finite latent values ``z`` stay within ``|z| <= limit``, beyond which the bias
    energy built from them overflows (:func:`overflow_limit`); else raise RuntimeError naming the components, their
    values and the atom farthest from the origin."""
    big = float(z.detach().abs().max())
    if big <= limit or big != big:  # NaN is check_finite_evaluation's to report
        return
    names: List[int] = components.tolist()
    values: List[float] = z.detach().to(torch.float64).reshape(-1).tolist()
    raise RuntimeError(
        "latentbias: latent component(s) z" + str(names) + " = " + str(values)
        + " exceed |z| <= " + str(limit) + ", beyond which the bias energy overflows; " + _farthest_atom(positions)
        + ": the positions are far outside the model's domain (did the simulation explode?)"
    )


def check_restraint_parameters(centre: Tensor, k: Tensor, names: List[str]) -> None:
    """TorchScript check of a restraint's global parameters as the Context holds them (``Context.setParameter``
    bypasses the Python setters): centres finite, force constants finite and >= 0; else RuntimeError naming the
    parameter and its value. ``names``: the centre parameters, then the force-constant parameters."""
    c = float(centre.detach().sum())
    kk = k.detach()
    ks = float(kk.sum())
    if c - c == 0.0 and ks - ks == 0.0 and float(kk.min()) >= 0.0:
        return
    n = int(centre.shape[0])
    for i in range(n):
        v = float(centre[i])
        if not v - v == 0.0:
            raise RuntimeError("latentbias: centre parameter '" + names[i] + "' is " + str(v) + " (set with "
                               "Context.setParameter); it must be finite")
    for i in range(n):
        v = float(kk[i])
        if not (v - v == 0.0 and v >= 0.0):
            raise RuntimeError("latentbias: force constant parameter '" + names[n + i] + "' is " + str(v) + " (set "
                               "with Context.setParameter); it must be finite and >= 0")


def overflow_limit(quadratic_constant: float, terms: int = 1) -> float:
    """The largest ``|z|`` for which ``terms`` energies ``½ k (z - edge)²`` (``k`` = ``quadratic_constant``, kJ/mol
    per unit of z², edges much smaller than the limit) sum to a finite float64: ``½ sqrt(2 DBL_MAX / (k terms))``
    (a factor 2 margin for the edges). ``inf`` when ``k <= 0``."""
    k = float(quadratic_constant)
    if not k > 0.0:
        return float("inf")
    return 0.5 * float(np.sqrt(2.0) * np.sqrt(np.finfo(np.float64).max / (k * max(int(terms), 1))))


def atom_list(indices: Any) -> str:
    """``"2 atom(s) (indices 0, 1)"`` (at most :data:`MAX_LISTED` listed)."""
    idx = [int(i) for i in np.asarray(indices).ravel()]
    text = ", ".join(str(i) for i in idx[:MAX_LISTED]) + (", ..." if len(idx) > MAX_LISTED else "")
    return f"{len(idx)} atom(s) (indices {text})"


def describe_nonfinite(model: Any, positions: Any, box: Optional[Any] = None) -> str | None:
    """What is not finite in the model's z and dz/dx at ``positions`` (PyTorch, float64), or None.

    Parameters
    ----------
    model : LatentModelFile
    positions : array_like, shape=(n_atoms, 3), nm
    box : array_like, shape=(3, 3), nm, optional

    Returns
    -------
    str or None
        E.g. ``"dz[0]/dx is not finite on 2 atom(s) (indices 0, 1)"``; None when z and its gradient are finite.
    """
    x = torch.tensor(np.asarray(positions, dtype=float), dtype=torch.float64, requires_grad=True)
    b = None if box is None else torch.as_tensor(np.asarray(box, dtype=float))
    try:
        z = model.module(x, b)
    except RuntimeError as exc:
        from .torchscript_errors import cause_first

        return "the model's forward fails: " + cause_first(str(exc)).splitlines()[0]
    parts = []
    for i in range(int(z.shape[0])):
        if not bool(torch.isfinite(z[i])):
            parts.append(f"z[{i}] = {float(z[i])}")
            continue
        if not z.requires_grad:
            continue
        (g,) = torch.autograd.grad(z[i], x, retain_graph=True, allow_unused=True)
        if g is not None and not bool(torch.isfinite(g).all()):
            parts.append(f"dz[{i}]/dx is not finite on {atom_list(np.flatnonzero(~torch.isfinite(g).all(-1).numpy()))}")
    return "; ".join(parts) or None


def nonfinite_frame_error(sim: Any, bias: Any, last: tuple, positions: Any, cause: str | None = None
                          ) -> NonFiniteBiasError:
    """The error of a simulation whose positions became NaN/inf (the campaign's segment runner).

    Parameters
    ----------
    sim : openmm.app.Simulation
    bias : object
        The round's bias; when it has ``model.file`` (a LatentModelFile), the model's z and dz/dx at the last
        finite frame are described (:func:`describe_nonfinite`).
    last : tuple
        (positions nm, box nm or None, step) of the last finite frame.
    positions : array_like, shape=(n_atoms, 3), nm
        Positions now.
    cause : str, optional
        OpenMM's message, when OpenMM raised.
    """
    xyz = np.asarray(positions, dtype=float)
    bad = np.flatnonzero(~np.all(np.isfinite(xyz), axis=-1)) if xyz.ndim == 2 else np.array([], dtype=int)
    message = f"the simulation became non-finite between step {last[2]} and step {sim.currentStep}"
    if len(bad):
        message += f": positions are NaN/inf on {atom_list(bad)}"
    if cause:
        message += f" (OpenMM: {cause.splitlines()[0]})"
    model = getattr(getattr(bias, "model", None), "file", None)
    if model is not None:
        found = describe_nonfinite(model, last[0], last[1])
        message += (f"; the bias's model at step {last[2]}: {found}" if found else
                    f"; the bias's model and its gradient are finite at step {last[2]} (the non-finite force arose "
                    "later in the segment or in another force)")
    return NonFiniteBiasError(message + ". Fix the model (NaN/inf output or gradient at these atoms) or the system, "
                              "then resume the run")
