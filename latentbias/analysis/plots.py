"""PNG plots of free-energy surfaces (matplotlib's object API with the Agg canvas: no pyplot, no global state)."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io import atomic_write_bytes
from .fes import FreeEnergySurface

logger = logging.getLogger(__name__)

__all__ = ["plot_fes"]


def plot_fes(
    fes: FreeEnergySurface,
    path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    vmax: float | None = None,
    reference: tuple[Any, Any] | None = None,
    overwrite: bool = False,
    dpi: int = 120,
) -> Path:
    """Plot a free-energy surface to a PNG file (written atomically).

    1-D: F with a ±error band, optionally over a reference curve. 2-D: F as a colour map (empty bins left blank)
    with contour lines and a colour bar labelled "free energy (kJ/mol)".

    Parameters
    ----------
    fes : FreeEnergySurface
        From :func:`~latentbias.analysis.fes.free_energy_surface`.
    path : str or path-like
        Output PNG file.
    labels : sequence of str, optional
        Axis labels, one per CV dimension (default ``cv0``, ``cv1``).
    title : str, optional
    vmax : float, optional
        Upper limit of F shown, **kJ/mol** (y limit in 1-D, top of the colour scale in 2-D).
    reference : (x, F) pair of arrays, optional
        1-D only: a reference curve (e.g. the analytic F in **kJ/mol**), plotted as given — shift it to the same
        zero as ``fes`` (min 0) before passing it.
    overwrite : bool
        Replace an existing file; by default an existing file raises FileExistsError.
    dpi : int
        Resolution.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not isinstance(fes, FreeEnergySurface):
        raise TypeError(f"plot_fes expects a FreeEnergySurface (from free_energy_surface), got {type(fes).__name__}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    ndim = fes.ndim
    if ndim not in (1, 2):
        raise ValueError(f"plot_fes draws 1-D or 2-D surfaces, got {ndim}-D")
    if labels is None:
        labels = [f"cv{i}" for i in range(ndim)]
    labels = list(labels)
    if len(labels) != ndim:
        raise ValueError(f"labels must hold one label per CV dimension ({ndim}), got {labels!r}")
    if vmax is not None and not (np.isfinite(vmax) and vmax > 0):
        raise ValueError(f"vmax must be a positive number of kJ/mol, got {vmax!r}")
    if reference is not None:
        if ndim != 1:
            raise ValueError("reference curves are supported for 1-D surfaces only")
        try:
            ref_x, ref_f = (np.asarray(r, dtype=np.float64) for r in reference)
        except (TypeError, ValueError):
            raise ValueError("reference must be a pair (x, F) of 1-D arrays of equal length") from None
        if ref_x.ndim != 1 or ref_x.shape != ref_f.shape:
            raise ValueError(
                f"reference must be a pair (x, F) of 1-D arrays of equal length, got shapes {ref_x.shape}, "
                f"{ref_f.shape}"
            )

    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plot_fes needs matplotlib: pip install matplotlib") from exc

    free = np.asarray(fes.free_energy, dtype=np.float64)
    err = np.asarray(fes.error, dtype=np.float64)
    finite = np.isfinite(free)
    fig = Figure(figsize=(6.0, 4.5) if ndim == 1 else (6.0, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if ndim == 1:
        x = fes.centers[0]
        ax.plot(x, free, color="C0", lw=1.8, label="estimate")
        band = np.where(np.isfinite(err), err, 0.0)
        ax.fill_between(x, free - band, free + band, color="C0", alpha=0.3, lw=0, label="± error")
        if reference is not None:
            ax.plot(ref_x, ref_f, color="k", ls="--", lw=1.2, label="reference")
        ax.set_xlabel(labels[0])
        ax.set_ylabel("free energy (kJ/mol)")
        if vmax is not None:
            ax.set_ylim(bottom=min(0.0, float(np.nanmin(free - band)) if np.any(finite) else 0.0), top=vmax)
        ax.legend(loc="best", frameon=False)
    else:
        top = float(vmax) if vmax is not None else (float(np.nanmax(free)) if np.any(finite) else 1.0)
        top = top if top > 0 else 1.0
        shown = np.ma.masked_invalid(free).T  # pcolormesh wants rows = y = second CV
        mesh = ax.pcolormesh(fes.edges[0], fes.edges[1], shown, cmap="viridis", vmin=0.0, vmax=top, shading="flat")
        if np.count_nonzero(finite) >= 4 and min(free.shape) >= 2:
            levels = np.linspace(0.0, top, 9)[1:]
            xx, yy = np.meshgrid(fes.centers[0], fes.centers[1], indexing="xy")
            ax.contour(xx, yy, shown, levels=levels, colors="white", linewidths=0.5, alpha=0.7)
        clipped = bool(np.any(free[finite] > top))
        cbar = fig.colorbar(mesh, ax=ax, extend="max" if clipped else "neither")
        cbar.set_label("free energy (kJ/mol)")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    ax.set_title(title if title is not None else f"T = {fes.temperature:g} K")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    out = atomic_write_bytes(path, buf.getvalue(), overwrite)
    logger.info("wrote %d-D free energy plot to %s", ndim, out)
    return out
