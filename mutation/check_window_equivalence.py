"""Evidence for the equivalent mutants of ``KernelDensity.kernel_window`` (bias/kernels.py; see TESTING.md, mut15g).

    python mutation/check_window_equivalence.py LINE OLD NEW [--trials N]

Builds a copy of ``latentbias/bias/kernels.py`` with ``OLD`` replaced by ``NEW`` on line ``LINE`` (a mutant of the
truncation window's index arithmetic), then adds one truncated kernel to a grid with the original and with the
mutant and compares the two grid sums **bit for bit**. Half of the cases are random (grids of 4-29 nodes on random
ranges, periodic or not, cutoffs 1.05-5, widths up to 0.3 of the range, centres up to 0.3 of the range beyond
either edge); the other half put the end of the kernel's reach within 0.1 spacing of the first, second, second-last
or last node, where the window's ends matter. Prints how many cases differ and the largest difference relative to
the kernel's peak on the grid. Not a test (mutants that differ are killed by tests/test_mutation_survivors_kernels.py);
a mutant that never differs here is listed as equivalent with its argument in TESTING.md.
"""

from __future__ import annotations

import argparse

import numpy as np

import latentbias.bias.kernels as original
from latentbias.bias import LatentVariable
from latentbias.bias.grid import BiasGrid


def mutant_module(line: int, old: str, new: str):
    lines = open(original.__file__).read().split("\n")
    if old not in lines[line - 1]:
        raise SystemExit(f"line {line} does not contain {old!r}: {lines[line - 1]!r}")
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    mod = type(original)("latentbias.bias.kernels_mutant")
    mod.__package__ = "latentbias.bias"
    exec(compile("\n".join(lines), "kernels_mutant", "exec"), mod.__dict__)
    return mod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("line", type=int)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--trials", type=int, default=20000)
    args = parser.parse_args()
    mutant = mutant_module(args.line, args.old, args.new)
    rng = np.random.default_rng(0)
    differ, worst, run = 0, 0.0, 0
    for t in range(args.trials):
        n = int(rng.integers(4, 30))
        lo = rng.uniform(-3, 1)
        hi = lo + rng.uniform(0.05, 20)
        periodic = bool(rng.random() < 0.5)
        grid = BiasGrid([LatentVariable(0, lo, hi, (hi - lo) / 10, periodic=periodic, gridWidth=n)])
        cutoff = float(rng.uniform(1.05, 5))
        centre = np.array([rng.uniform(lo - 0.3 * (hi - lo), hi + 0.3 * (hi - lo))])
        sigma = np.array([rng.uniform(0.01, 0.3) * (hi - lo)])
        if t % 2:  # the reach ends within 0.1 spacing of an end node or its neighbour
            axis = np.linspace(lo, hi, n)
            k = int(rng.choice([0, 1, n - 2, n - 1]))
            edge = axis[k] + rng.uniform(-0.1, 0.1) * (hi - lo) / (n - 1)
            centre = np.array([edge + sigma[0] * cutoff if rng.random() < 0.5 else edge - sigma[0] * cutoff])
        if periodic and sigma[0] * cutoff > 0.5 * (hi - lo):
            continue  # minimum-image kernels need a reach below half the period
        run += 1
        a, b = np.zeros(grid.shape), np.zeros(grid.shape)
        original.KernelDensity(grid, 0.0, cutoff=cutoff).add_kernel_to(a, centre, sigma, 1.0)
        mutant.KernelDensity(grid, 0.0, cutoff=cutoff).add_kernel_to(b, centre, sigma, 1.0)
        if not np.array_equal(a, b):
            differ += 1
            worst = max(worst, float(np.max(np.abs(a - b)) / max(a.max(), 1e-300)))
    print(f"line {args.line}: {args.old!r} -> {args.new!r}: {differ} of {run} cases differ; "
          f"largest difference {worst:.3g} of the peak")


if __name__ == "__main__":
    main()
