"""pyKVFinder as a reference for latentbias.analysis.pockets (test/benchmark helper, never imported by the package).

pyKVFinder is GPL-3: it is a test-only dependency (`pip install pykvfinder==0.9.6 --no-deps`, see the Makefile), used
here only to compute reference volumes. The same atoms, van der Waals radii, region box and probe settings as ours
are handed to it, so the comparison tests the cavity algorithm, not the choice of radii.
"""

from __future__ import annotations

import numpy as np


def kvfinder_available() -> bool:
    try:
        import pyKVFinder  # noqa: F401
    except ImportError:
        return False
    return True


def kvfinder_volume(measure, xyz: np.ndarray, topology, nthreads: int = 1) -> float:
    """pyKVFinder's total cavity volume (Å³) for one frame, with the settings and region box of ``measure``.

    Parameters
    ----------
    measure : latentbias.analysis.pockets.CavityVolume
        Residue-box region; its step, probes, removal distance, volume cutoff and surface are used.
    xyz : numpy.ndarray, shape=(n_atoms, 3), nm
    topology : mdtraj.Topology
    """
    import pyKVFinder

    lo, hi, centre = measure.region.bounds(xyz)
    if centre is not None:
        raise ValueError("the pyKVFinder reference supports residue-box regions only")
    po = measure.probe_out * 10.0
    lo, hi = lo * 10.0, hi * 10.0
    # pyKVFinder's custom box: the region box enlarged by probe_out (as its get_vertices_from_file does)
    p1 = lo - po
    vertices = np.array([p1, [hi[0] + po, p1[1], p1[2]], [p1[0], hi[1] + po, p1[2]], [p1[0], p1[1], hi[2] + po]])
    keep = np.flatnonzero(measure.radii > 0)
    # atoms that can touch the grid (pyKVFinder filters the same way in its box mode)
    reach = (measure.radii[keep] + measure.probe_out) * 10.0
    pos = xyz[keep] * 10.0
    keep = keep[np.all((pos > vertices[0] - reach[:, None]) & (pos < hi + po + reach[:, None]), axis=1)]
    atoms = list(topology.atoms)
    atomic = np.array([[atoms[i].residue.resSeq, "A", atoms[i].residue.name, atoms[i].name,
                        *(xyz[i] * 10.0), measure.radii[i] * 10.0] for i in keep], dtype=object).astype(str)
    _, cavities = pyKVFinder.detect(
        atomic, vertices, step=measure.step * 10.0, probe_in=measure.probe_in * 10.0, probe_out=po,
        removal_distance=measure.removal_distance * 10.0, volume_cutoff=measure.volume_cutoff * 1000.0,
        box_adjustment=True, surface=measure.surface, nthreads=nthreads,
    )
    # cavity points carry labels >= 2; volume = points * step³ (what pyKVFinder.spatial sums, without rounding)
    return float(np.count_nonzero(cavities >= 2)) * (measure.step * 10.0) ** 3
