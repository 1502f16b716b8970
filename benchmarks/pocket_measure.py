"""Speed of the pocket cavity-volume measure and its agreement with pyKVFinder, side by side.

Frames: ``tests/data/t4l_l99a_breathing.xtc`` (40 frames of T4 lysozyme L99A, 2603 atoms, MD with the cavity
residues heated; ``benchmarks/pocket_frames.py`` regenerates it). Region: the box around the 13 residues lining the
L99A cavity (230 atoms). Both measures get the same atoms, Bondi radii, box and probe settings (step 0.6 Å, probe-in
1.4 Å, probe-out 4.0 Å, removal 2.4 Å, volume cutoff 5 Å³, SES). pyKVFinder (GPL-3) is optional: without it only
our speed is printed. Run single-threaded for a one-core number::

    OMP_NUM_THREADS=1 python benchmarks/pocket_measure.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the pyKVFinder adapter lives with the tests (test-only dependency)

POCKET_RESIDUES = [78, 84, 87, 88, 91, 99, 102, 103, 111, 118, 121, 133, 153]


def best_time(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU (process) time of ``repeat`` calls, s. On a shared machine the CPU time is the
    cost on one core; the wall time includes waiting for a core."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return min(wall), min(cpu)


def main() -> None:
    import mdtraj as md
    import scipy
    from scipy.stats import pearsonr, spearmanr

    import latentbias
    from latentbias.analysis.pockets import CavityVolume, PocketRegion, atom_radii
    from kvfinder_reference import kvfinder_available, kvfinder_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default=str(ROOT / "tests" / "data" / "t4l_l99a_breathing.xtc"))
    parser.add_argument("--topology", help="receptor.pdb (default: openmmtools' T4-lysozyme-L99A-implicit)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions (best is kept)")
    parser.add_argument("--machine", default=platform.node())
    args = parser.parse_args()

    if args.topology is None:
        from latentbias.testsystems import _package_dir

        args.topology = str(_package_dir("openmmtools") / "data" / "T4-lysozyme-L99A-implicit" / "receptor.pdb")
    top = md.load_topology(args.topology)
    traj = md.load(args.frames, top=top)
    frames = traj.xyz.astype(np.float64)
    region = PocketRegion.from_residues(top, POCKET_RESIDUES)
    measure = CavityVolume(region, atom_radii(top))
    measure(frames[:1])  # builds the stencil tables once
    ours = measure(frames) * 1000.0  # Å³
    t_ours = best_time(lambda: measure(frames), args.repeat)
    rows = [("latentbias CavityVolume (numpy/scipy, 1 thread)", len(frames) / t_ours[0], len(frames) / t_ours[1])]
    stats = {}
    if kvfinder_available():
        import pyKVFinder

        ref = np.array([kvfinder_volume(measure, x, top) for x in frames])
        t_ref = best_time(lambda: [kvfinder_volume(measure, x, top) for x in frames], max(1, args.repeat - 2))
        rows.append((f"pyKVFinder {pyKVFinder.__version__} detect (C, nthreads=1, same box/atoms)",
                     len(frames) / t_ref[0], len(frames) / t_ref[1]))
        same = np.isclose(ours, ref, rtol=1e-6, atol=1e-6)
        stats = {"spearman": spearmanr(ours, ref)[0], "pearson": pearsonr(ours, ref)[0],
                 "identical": int(same.sum()), "max_rel": float(np.max(np.abs(ours - ref) / ref))}
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    head = (f"{datetime.date.today()} · {args.machine} · python {platform.python_version()} · numpy {np.__version__}"
            f" · scipy {scipy.__version__} · mdtraj {md.__version__} · latentbias {getattr(latentbias, '__version__', 'src')}"
            f" · OMP_NUM_THREADS={threads} · {len(frames)} frames, {top.n_atoms} atoms, region "
            f"{len(region.atoms)} atoms, best of {args.repeat}")
    print(head)
    print()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"| measure | frames/s (wall, load {load:.1f} on {os.cpu_count()} cores) | frames per CPU-second (one core) |")
    print("|---|---:|---:|")
    for name, fps_wall, fps_cpu in rows:
        print(f"| {name} | {fps_wall:8.1f} | {fps_cpu:8.1f} |")
    print()
    print(f"cavity volume over the frames: {ours.min():.1f}–{ours.max():.1f} Å³ (mean {ours.mean():.1f}, "
          f"sd {ours.std():.1f})")
    if stats:
        print(f"agreement with pyKVFinder: Spearman {stats['spearman']:.4f}, Pearson {stats['pearson']:.4f}, "
              f"identical on {stats['identical']}/{len(frames)} frames, largest relative difference "
              f"{stats['max_rel']:.3f}")
    else:
        print("pyKVFinder not installed (pip install --no-deps pykvfinder==0.9.6): no agreement check")


if __name__ == "__main__":
    main()
