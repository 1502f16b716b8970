"""Latent variables and the tabulated bias grid used by metadynamics.

Conventions follow ``openmm.app.Metadynamics`` so results are comparable: grid points are
``linspace(minValue, maxValue, gridWidth)`` on each axis (for periodic axes the last point duplicates the first),
Gaussians are ``height * exp(-0.5 * (Δz / biasWidth)^2)`` per axis, and the tabulated function is a
``Continuous{1,2,3}DFunction`` (cubic splines). Unlike OpenMM the grid array is indexed in natural order:
``values[i0, i1, i2]`` is the bias at ``(axis0[i0], axis1[i1], axis2[i2])``.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from dataclasses import dataclass
from functools import reduce
from typing import Any, Sequence

import numpy as np

from ..validation import deprecated_alias, renamed_keywords, strip_unit
from .cutoff import check_cutoff

__all__ = ["LatentVariable", "BiasGrid", "check_variables"]

logger = logging.getLogger(__name__)


@dataclass
class LatentVariable:
    """One latent dimension to bias (the latent-space analogue of ``openmm.app.BiasVariable``).

    Parameters
    ----------
    index : int
        Which component of the model's output z.
    minValue, maxValue : float
        Grid range (units of z). Outside it, restoring walls act (non-periodic variables).
    biasWidth : float
        Standard deviation of the deposited Gaussians (units of z).
    periodic : bool
        ``minValue`` and ``maxValue`` are the same point (e.g. an angle in [-π, π]).
    gridWidth : int, optional
        Number of grid points; default ``ceil(5 * (maxValue - minValue) / biasWidth)`` as in OpenMM.
    """

    index: int
    minValue: float
    maxValue: float
    biasWidth: float
    periodic: bool = False
    gridWidth: int | None = None

    def __post_init__(self) -> None:
        self.minValue = float(strip_unit(self.minValue))
        self.maxValue = float(strip_unit(self.maxValue))
        self.biasWidth = float(strip_unit(self.biasWidth))
        if isinstance(self.index, bool) or int(self.index) != self.index or self.index < 0:
            raise ValueError(f"LatentVariable.index must be a non-negative int, got {self.index!r}")
        self.index = int(self.index)
        if not (math.isfinite(self.minValue) and math.isfinite(self.maxValue)) or self.maxValue <= self.minValue:
            raise ValueError(f"LatentVariable {self.index}: need minValue < maxValue, got {self.minValue}, {self.maxValue}")
        if not self.biasWidth > 0:
            raise ValueError(f"LatentVariable {self.index}: biasWidth must be positive, got {self.biasWidth}")
        if not isinstance(self.periodic, (bool, np.bool_)):
            raise ValueError(f"LatentVariable {self.index}: periodic must be True or False")
        self.periodic = bool(self.periodic)
        if self.gridWidth is None:
            self.gridWidth = int(np.ceil(5 * (self.maxValue - self.minValue) / self.biasWidth))
        if int(self.gridWidth) < 4:
            raise ValueError(f"LatentVariable {self.index}: gridWidth must be at least 4, got {self.gridWidth}")
        self.gridWidth = int(self.gridWidth)

    @classmethod
    @renamed_keywords(width_fraction="widthFraction")
    def fromSamples(
        cls, index: int, values: Any, margin: float = 0.3, widthFraction: float = 0.05, **kwargs: Any
    ) -> "LatentVariable":
        """Variable whose grid covers the sampled range of ``values`` extended by ``margin`` × range each side.

        Parameters
        ----------
        values : array_like, shape=(n_frames,)
            Observed values of latent component ``index`` (e.g. z of the training frames).
        margin : float, default 0.3
            Fraction of the observed range added on each side.
        widthFraction : float, default 0.05
            Gaussian width as a fraction of the observed range.
        """
        v = np.asarray(values, dtype=float)
        if v.size < 2 or not np.all(np.isfinite(v)):
            raise ValueError(f"LatentVariable.fromSamples needs at least two finite values, got {v.size} value(s)"
                             f" ({np.count_nonzero(~np.isfinite(v))} non-finite)")
        lo, hi = float(v.min()), float(v.max())
        span = max(hi - lo, 1e-6)
        return cls(index, lo - margin * span, hi + margin * span, widthFraction * span, **kwargs)

    @classmethod
    @renamed_keywords(width_fraction="widthFraction")
    def fromModel(
        cls, index: int, model: Any, margin: float = 0.3, widthFraction: float = 0.05, **kwargs: Any
    ) -> "LatentVariable":
        """Variable whose grid covers the model's training range of z (metadata ``z_range``) plus ``margin``.

        Latent coordinates have no physical scale: a grid of ±3 may be too narrow for one model and far too wide
        for another, so by default take the range the encoder saw in training.

        Parameters
        ----------
        index : int
        model : str, path-like or LatentModelFile
            A model exported with training information (``latentbias train``, :func:`~latentbias.save_model` with
            ``training=`` or ``z_range=``, campaign models).
        margin : float, default 0.3
            As in :meth:`fromSamples`.
        widthFraction : float, default 0.05
            As in :meth:`fromSamples`.
        """
        from ..forces import as_model_file

        mf = as_model_file(model)
        zr = mf.metadata.get("z_range")
        if not zr:
            where = mf.path or "this model"
            raise ValueError(f"{where} stores no training range of z (z_range); give minValue/maxValue explicitly "
                             "or use LatentVariable.fromSamples(index, z_of_your_frames)")
        if not 0 <= int(index) < mf.latent_dim:
            raise ValueError(f"index must be in [0, {mf.latent_dim}), got {index}")
        return cls.fromSamples(index, [zr["min"][index], zr["max"][index]], margin, widthFraction, **kwargs)

    # snake_case names of earlier releases (OpenMM-facing, like openmm.app.BiasVariable: camelCase)
    from_samples = deprecated_alias("fromSamples", "from_samples", kind="classmethod")
    from_model = deprecated_alias("fromModel", "from_model", kind="classmethod")
    to_dict = deprecated_alias("toDict", "to_dict")

    @property
    def axis(self) -> np.ndarray:
        """Grid points, shape=(gridWidth,)."""
        return np.linspace(self.minValue, self.maxValue, self.gridWidth)

    def toDict(self) -> dict[str, Any]:
        """The variable as a JSON-serialisable dict (the constructor's keywords)."""
        return {
            "index": self.index,
            "minValue": self.minValue,
            "maxValue": self.maxValue,
            "biasWidth": self.biasWidth,
            "periodic": self.periodic,
            "gridWidth": self.gridWidth,
        }


class BiasGrid:
    """Geometry of a bias tabulated on a regular grid over 1-3 latent variables (values are held by the caller).

    Parameters
    ----------
    variables : sequence of LatentVariable
    kernelCutoff : float, optional
        Truncation of the Gaussians deposited on this grid (:meth:`gaussian_factors`), in widths along each axis:
        each axis factor is cut at |Δz| = kernelCutoff · biasWidth and stretched to fall to zero there
        continuously (:func:`latentbias.bias.cutoff.truncated_gaussian`). None (default): untruncated Gaussians.
    """

    def __init__(self, variables: Sequence[LatentVariable], kernelCutoff: float | None = None):
        self.kernelCutoff = kernelCutoff  # validated by the setter
        variables = list(variables)
        if not 1 <= len(variables) <= 3:
            raise ValueError(f"a bias grid needs 1, 2 or 3 latent variables, got {len(variables)}")
        if len({v.index for v in variables}) != len(variables):
            raise ValueError("each latent component may appear only once among the variables")
        self.variables = variables
        self.shape = tuple(v.gridWidth for v in variables)
        self._axes = [v.axis for v in variables]
        # per-deposit constants: the axes laid end to end, so that the factors of all axes come from one pass of
        # each numpy call (elementwise the same arithmetic as axis by axis; see gaussian_factors)
        self._offsets = [0]
        for n in self.shape:
            self._offsets.append(self._offsets[-1] + n)
        self._slices = [slice(a, b) for a, b in zip(self._offsets[:-1], self._offsets[1:])]
        self._flatAxes = np.concatenate(self._axes)
        self._flatWidths = np.repeat([v.biasWidth for v in variables], self.shape)
        self._axisOf = np.repeat(np.arange(len(variables)), self.shape)
        self._periodicAxes = [(s, v.maxValue - v.minValue) for s, v in zip(self._slices, variables) if v.periodic]

    @property
    def kernelCutoff(self) -> float | None:
        """Truncation of the deposited Gaussians in widths along each axis (None: untruncated)."""
        return self._kernelCutoff

    @kernelCutoff.setter
    def kernelCutoff(self, cutoff: float | None) -> None:
        self._kernelCutoff = check_cutoff(cutoff)
        # truncated_gaussian's constants, e^{-c²/2} and 1 − e^{-c²/2}, computed as it computes them
        self._atCutoff = 0.0 if self._kernelCutoff is None else math.exp(-0.5 * self._kernelCutoff * self._kernelCutoff)
        self._stretch = 1.0 - self._atCutoff

    @property
    def ndim(self) -> int:
        return len(self.variables)

    @property
    def axes(self) -> list[np.ndarray]:
        return [a.copy() for a in self._axes]

    def gaussian_factors(self, position: Sequence[float]) -> list[np.ndarray]:
        """Per-axis factors of the unit-height Gaussian centred at ``position`` (shape=(d,)): one array of shape
        (gridWidth,) per variable, ``exp(-0.5 (Δz/biasWidth)^2)`` with the minimum image along periodic axes (whose
        last point repeats the first), truncated at ``kernelCutoff`` widths when set. :meth:`gaussian` is their outer
        product."""
        return self._flat_factors(position)[1]

    def _flat_factors(self, position: Sequence[float]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The factors of :meth:`gaussian_factors` of all axes in one array (axes end to end, shape=(Σ gridWidth,))
        and as per-axis views of it. Each node gets exactly the arithmetic of an axis-by-axis evaluation (``axis −
        x``, minimum image ``δ − L·round(δ/L)``, ``δ/biasWidth``, then
        :func:`~latentbias.bias.cutoff.truncated_gaussian`'s), in one numpy call per step for all axes: a deposit's
        cost is then not that of ~10 small numpy calls per axis (``tests/test_deposit_fastpath.py`` checks it bit
        for bit against the axis-by-axis evaluation)."""
        x = np.asarray(position, dtype=float).reshape(-1)  # float(x) of each coordinate, as axis by axis
        if x.shape != (len(self.variables),):
            raise ValueError(f"a Gaussian's centre needs {len(self.variables)} coordinates, got {position!r}")
        u = np.subtract(self._flatAxes, x[self._axisOf])
        for s, period in self._periodicAxes:
            part = u[s]
            u[s] = part - period * np.round(part / period)
        u /= self._flatWidths
        # exp(-0.5 u²), then truncated_gaussian's cut and stretch, in place (x·y, x − y, x / y as it computes them)
        g = u * u
        g *= -0.5
        np.exp(g, out=g)
        if self.kernelCutoff is not None:
            g -= self._atCutoff
            g /= self._stretch
            g[~(np.abs(u) < self.kernelCutoff)] = 0.0
        for s, _ in self._periodicAxes:
            g[s.stop - 1] = g[s.start]
        return g, [g[s] for s in self._slices]

    def gaussian(self, position: Sequence[float]) -> np.ndarray:
        """Unit-height Gaussian centred at ``position`` (shape=(d,)), evaluated on the grid (``self.shape``)."""
        return reduce(np.multiply.outer, self.gaussian_factors(position))

    def add_gaussian(self, values: np.ndarray, position: Sequence[float], height: float,
                     buffer: np.ndarray | None = None) -> list[np.ndarray]:
        """``values += height * self.gaussian(position)`` in place, with the same arithmetic (bit for bit) but
        without temporaries of the grid's size when ``buffer`` (shape=self.shape, float64, scratch) is given.

        Returns
        -------
        list of numpy.ndarray
            The per-axis factors (:meth:`gaussian_factors`).
        """
        return self.deposit(values, position, height, buffer)[0]

    def deposit(self, values: np.ndarray, position: Sequence[float], height: float,
                buffer: np.ndarray | None = None) -> tuple[list[np.ndarray], tuple[slice, ...] | None]:
        """:meth:`add_gaussian`, returning (per-axis factors, :meth:`support` of a truncated Gaussian, or None for
        an untruncated one, which changes the whole grid)."""
        flat, factors = self._flat_factors(position)
        if self.kernelCutoff is not None:
            # a truncated Gaussian is exactly 0 beyond its support: add it there only (x + 0.0 == x, so the grid is
            # the same, bit for bit, as after the whole-grid addition)
            window = self._flat_support(flat)
            block = reduce(np.multiply.outer, [f[w] for f, w in zip(factors, window)])
            block *= height  # == height * block, elementwise
            target = values[window]  # a view: adding in place is values[window] += block without the copy back
            target += block
            return factors, window
        if self.ndim == 1 or buffer is None:
            values += height * reduce(np.multiply.outer, factors)
            return factors, None
        head = reduce(np.multiply.outer, factors[:-1])
        np.multiply.outer(head, factors[-1], out=buffer)
        np.multiply(buffer, height, out=buffer)
        values += buffer
        return factors, None

    def _flat_support(self, flat: np.ndarray) -> tuple[slice, ...]:
        """:meth:`support` of the factors laid end to end (:meth:`_flat_factors`), from one ``nonzero``."""
        nz = flat.nonzero()[0].tolist()
        window = []
        for k, offset in enumerate(self._offsets[:-1]):
            a, b = bisect_left(nz, offset), bisect_left(nz, self._offsets[k + 1])
            if a == b:
                window.append(slice(0, 0))
                continue
            first, last = nz[a] - offset, nz[b - 1] - offset
            window.append(slice(first, last + 1) if last - first + 1 == b - a else slice(0, self.shape[k]))
        return tuple(window)

    @staticmethod
    def support(factors: Sequence[np.ndarray]) -> tuple[slice, ...]:
        """Per-axis slices holding every non-zero entry of the given axis factors (:meth:`gaussian_factors`): the
        contiguous range of non-zero nodes, or the whole axis when they are not contiguous (a kernel that wraps
        around a periodic axis), or an empty slice when all are zero."""
        window = []
        for f in factors:
            nz = f.nonzero()[0]
            if len(nz) == 0:
                window.append(slice(0, 0))
            elif nz[-1] - nz[0] + 1 == len(nz):
                window.append(slice(int(nz[0]), int(nz[-1]) + 1))
            else:
                window.append(slice(0, len(f)))
        return tuple(window)

    def table_values(self, values: np.ndarray) -> list[float]:
        """Grid values (shape=self.shape) flattened for OpenMM's Continuous*DFunction (first axis fastest)."""
        v = np.asarray(values, dtype=float)
        if v.shape != self.shape:
            raise ValueError(f"grid values must have shape {self.shape}, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("grid values must be finite")
        return v.ravel(order="F").tolist()

    def limits(self) -> list[float]:
        return [x for v in self.variables for x in (v.minValue, v.maxValue)]

    @property
    def periodic(self) -> bool:
        """True when all variables are periodic (OpenMM's tabulated functions need all or none)."""
        flags = {v.periodic for v in self.variables}
        if len(flags) > 1:
            raise ValueError(
                "the CustomCVForce route cannot mix periodic and non-periodic latent variables (OpenMM's "
                "Continuous2D/3DFunction are periodic in all or no dimensions)"
            )
        return flags.pop()

    def make_function(self, values: np.ndarray | None = None):
        """A new OpenMM tabulated function holding ``values`` (default: zeros)."""
        import openmm

        table = self.table_values(np.zeros(self.shape) if values is None else values)
        if self.ndim == 1:
            return openmm.Continuous1DFunction(table, *self.limits(), self.periodic)
        if self.ndim == 2:
            return openmm.Continuous2DFunction(*self.shape, table, *self.limits(), self.periodic)
        return openmm.Continuous3DFunction(*self.shape, table, *self.limits(), self.periodic)

    def set_function_parameters(self, function: Any, values: np.ndarray) -> None:
        """Copy grid values into an existing OpenMM tabulated function."""
        table = self.table_values(values)
        if self.ndim == 1:
            function.setFunctionParameters(table, *self.limits())
        else:
            function.setFunctionParameters(*self.shape, table, *self.limits())

    def interpolate(self, points: Any, values: np.ndarray) -> np.ndarray:
        """Bias at arbitrary points by multilinear interpolation (points outside the grid are clamped to it).

        Parameters
        ----------
        points : array_like, shape=(n, d)
        values : numpy.ndarray, shape=self.shape

        Returns
        -------
        numpy.ndarray, shape=(n,)
        """
        from scipy.interpolate import RegularGridInterpolator

        pts = np.atleast_2d(np.asarray(points, dtype=float))
        if pts.shape[1] != self.ndim:
            raise ValueError(f"points must have shape (n, {self.ndim}), got {pts.shape}")
        pts = pts.copy()
        for j, v in enumerate(self.variables):
            if v.periodic:
                period = v.maxValue - v.minValue
                pts[:, j] = v.minValue + np.mod(pts[:, j] - v.minValue, period)
            pts[:, j] = np.clip(pts[:, j], v.minValue, v.maxValue)
        interp = RegularGridInterpolator(self.axes, np.asarray(values, dtype=float), method="linear")
        return interp(pts)


def check_variables(model: Any, variables: Sequence[LatentVariable | int] | None) -> list[LatentVariable]:
    """The variables of a grid bias on ``model`` (a LatentModelFile), checked against it.

    Latent coordinates have no physical scale, so a variable given only by its index (an ``int``), or
    ``variables=None`` (every latent dimension), takes its grid from the model's stored training range of z
    (:meth:`LatentVariable.fromModel`, logged in one line); a component the model declares periodic gets its period.
    An explicit grid that does not cover the training range is kept, with a warning.

    Raises
    ------
    TypeError
        An entry is neither a :class:`LatentVariable` nor an ``int``.
    ValueError
        An index beyond the model's latent_dim, a component the model declares periodic that is not declared
        periodic on the same range, or an index alone for a model that stores no training range of z.
    """
    entries = list(range(model.latent_dim)) if variables is None else list(variables)
    out = []
    for v in entries:
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            v = _default_variable(model, int(v))
        if not isinstance(v, LatentVariable):
            raise TypeError(f"variables must be LatentVariable objects or latent indices (int), got {type(v).__name__}")
        if v.index >= model.latent_dim:
            raise ValueError(f"LatentVariable index {v.index} but the model has latent_dim={model.latent_dim}")
        period = model.periodic[v.index]
        if period is not None and (not v.periodic or not np.allclose([v.minValue, v.maxValue], period)):
            raise ValueError(
                f"latent component {v.index} is periodic on {period}; declare LatentVariable(periodic=True, "
                f"minValue={period[0]}, maxValue={period[1]})"
            )
        zr = (getattr(model, "metadata", None) or {}).get("z_range") or {}
        if period is None and zr.get("min") is not None and zr.get("max") is not None:
            lo, hi = float(zr["min"][v.index]), float(zr["max"][v.index])
            if v.minValue > lo or v.maxValue < hi:
                logger.warning(
                    "LatentVariable %d spans [%.4g, %.4g] but the model saw z%d in [%.4g, %.4g] in training: frames "
                    "outside the grid feel only its edge walls. Give the index alone (or LatentVariable.fromModel(%d, "
                    "model)) for a grid over the training range", v.index, v.minValue, v.maxValue, v.index, lo, hi,
                    v.index)
        out.append(v)
    return out


def _default_variable(model: Any, index: int) -> LatentVariable:
    """The variable of a latent index given alone: its period when periodic, else the training range of z."""
    if not 0 <= index < model.latent_dim:
        raise ValueError(f"latent index {index} but the model has latent_dim={model.latent_dim}")
    period = model.periodic[index]
    if period is not None:
        lo, hi = float(period[0]), float(period[1])
        return LatentVariable(index, lo, hi, 0.05 * (hi - lo), periodic=True)
    v = LatentVariable.fromModel(index, model)
    zr = model.metadata["z_range"]
    logger.info("LatentVariable %d: grid [%.4g, %.4g], biasWidth %.4g, %d points, from the model's training range of "
                "z%d [%.4g, %.4g] plus 30%% on each side", index, v.minValue, v.maxValue, v.biasWidth, v.gridWidth,
                index, zr["min"][index], zr["max"][index])
    return v
