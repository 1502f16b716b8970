#ifndef LATENTBIAS_GRID_H_
#define LATENTBIAS_GRID_H_

#include "internal/windowsExportLatentBias.h"
#include <cstddef>
#include <vector>

namespace LatentBiasPlugin {

/**
 * Smooth interpolation of a table on a regular 1-3 dimensional grid, identical to OpenMM's
 * Continuous1D/2D/3DFunction on the Reference platform.
 *
 * When all dimensions share the same periodicity, OpenMM's own SplineFitter (exported from libOpenMM) builds and
 * evaluates the spline: createSpline / create2DSpline / create3DSpline and the matching evaluate functions, exactly
 * what ReferenceContinuous{1,2,3}DFunction calls. When periodicity differs between dimensions (which OpenMM's
 * tabulated functions cannot express) the same construction is carried out per axis: node derivatives come from
 * SplineFitter::createSpline along each axis with that axis' periodicity (in OpenMM's order: d/dx, d/dy, d/dz,
 * then the cross derivatives d2/dxdy = x-spline of d/dy, d2/dydz = y-spline of d/dz, d2/dxdz = z-spline of d/dx,
 * d3/dxdydz = x-spline of d2/dydz), and each cell is the tensor-product cubic Hermite patch through those node
 * values and derivatives, which is the bicubic/tricubic patch OpenMM's coefficient matrices encode.
 *
 * Values are flattened with the first axis fastest: values[i0 + n0*i1 + n0*n1*i2].
 */
class OPENMM_EXPORT_LATENTBIAS LatentBiasGrid {
public:
    struct Axis {
        double minValue, maxValue;
        int size;
        bool periodic;
    };
    LatentBiasGrid();
    /**
     * Build the interpolant. With forceGeneric the per-axis construction is used even when the periodicity is
     * uniform (for testing it against OpenMM's SplineFitter).
     */
    void initialize(const std::vector<Axis>& axes, const std::vector<double>& values, bool forceGeneric = false);
    int getNumDimensions() const {
        return (int) axes.size();
    }
    const std::vector<Axis>& getAxes() const {
        return axes;
    }
    bool usesOpenMMSplineFitter() const {
        return !generic;
    }
    /** The table (first axis fastest). */
    const std::vector<double>& getValues() const {
        return values;
    }
    /** Grid points along `axis`. */
    const std::vector<double>& getPoints(int axis) const {
        return x[axis];
    }
    /**
     * Per-axis construction only (initialize(..., forceGeneric = true) or mixed periodicity): the node derivatives,
     * nodeDerivatives[mask][node], mask bit k = d/d axis k; each cell is the tensor-product cubic Hermite patch
     * through them (the form the device kernels evaluate). Empty for the SplineFitter construction.
     */
    const std::vector<std::vector<double> >& getNodeDerivatives() const {
        return nodeDerivs;
    }
    /**
     * Value of the interpolant at point t (one coordinate per axis), and its gradient in grad.
     * Coordinates along periodic axes are wrapped into [min, max] (as OpenMM does); points outside a non-periodic
     * axis give 0 and a zero gradient (callers clamp first, see LatentBiasEvaluator).
     */
    double evaluate(const double* t, double* grad) const;
    /** OpenMM's periodic wrap: min + L*(s - floor(s)), s = (t-min)/L. */
    static double wrap(double t, double minValue, double maxValue);
    /** Grid points along an axis: linspace(min, max, size), the arithmetic of ReferenceContinuous*DFunction. */
    static std::vector<double> axisPoints(const Axis& axis);
    /**
     * The first dimension k with periodic[k] along which the flattened array a (first dimension fastest; n[k] points
     * per dimension, 1 beyond the grid's dimensions) does not repeat its first plane in its last one, or -1: OpenMM's
     * periodic splines, and the Hermite tables, require the last plane to duplicate the first.
     */
    static int periodicPlaneMismatch(const double* a, const int n[3], const std::vector<bool>& periodic);
    /**
     * One axis factor of a separable Gaussian on the grid points of `axis`: exp(-(x_i - center)^2 / (2 width^2)),
     * with the minimum-image difference (nearest period, ties to even) along a periodic axis, whose last point
     * then repeats the first. The product over axes of these factors is what
     * LatentBiasForce::addGridGaussian adds to the grid values. With cutoff c > 0 the factor is truncated at
     * |u| = c (u = (x_i - center)/width) and shifted and stretched to fall to zero there continuously with its peak
     * kept at 1: (exp(-u^2/2) - exp(-c^2/2)) / (1 - exp(-c^2/2)) for |u| < c, exactly 0 beyond.
     */
    static std::vector<double> gaussianFactor(const Axis& axis, double center, double width, double cutoff = 0.0);
    /**
     * Add height * (f_0 (x) f_1 (x) f_2)[i0, i1, i2] (one factor per axis, length = the axis size) to the grid
     * values and update the interpolant exactly and locally: the spline's node derivatives are linear in the
     * values and the derivative of a separable product is the product of the per-axis derivatives, so each
     * derivative array changes by one outer product of per-axis vectors, applied where it exceeds 1e-17 of the
     * peak (below double rounding of the values). The window is chosen per array and axis: the factor's own
     * support along the axes the array is not differentiated along (a truncated factor is exactly zero beyond its
     * cutoff), the support of the factor's spline derivative (which decays by ~0.27 per grid point beyond the
     * factor's support) along the others. Cost: the sum of the windows, independent of the rest of the grid; no
     * global refit. Switches the grid to the Hermite form of the same spline (see initialize).
     */
    void addSeparable(const std::vector<std::vector<double> >& factors, double height);
    /** An OPES kernel, as LatentBiasForce::addGridKernel defines it (center, width: one value per axis). */
    struct DensityKernel {
        std::vector<double> center, width;
        double weight, cutoff;
    };
    /**
     * The values of a truncated OPES kernel (cutoff > 0) on the grid points where it can be non-zero: per axis the
     * sorted node indices within cutoff widths of the centre (minimum image; along a periodic axis the last point
     * repeats the first and is listed with it), and the kernel on their product in `block` (first axis fastest),
     * weight * (exp(-r^2/2) - exp(-c^2/2)) / prod_k(sqrt(2 pi) width_k) for r < c, 0 beyond: the arithmetic of
     * latentbias.bias.kernels.KernelDensity.kernel_window.
     */
    static void densityKernelBlock(const std::vector<Axis>& axes, const DensityKernel& kernel,
                                   std::vector<std::vector<int> >& indices, std::vector<double>& block);
    /**
     * Add OPES kernels to the values and update the interpolant exactly and locally. Truncated kernels are summed
     * into one block on the union of their supports, which is applied by addLocalBlock(); untruncated ones (cutoff
     * 0, separable) by addSeparable().
     */
    void addDensityKernels(const std::vector<DensityKernel>& kernels);
    /**
     * Add `block` (values on the product of the per-axis node lists `indices`, first axis fastest; along a periodic
     * axis a list holding the first point must hold the last one with the same values) to the grid values and
     * update the interpolant exactly: every node-derivative array changes by the spline-derivative operators of
     * its axes applied to the block, i.e. by sums of columns of the per-axis operators (cached), along the
     * differentiated axes over the whole axis, along the others only on the block's nodes. Cost ~ (block size) x
     * (axis size) per differentiated axis; no global refit. Switches the grid to the Hermite form (see initialize).
     */
    void addLocalBlock(const std::vector<std::vector<int> >& indices, const std::vector<double>& block);

    /**
     * Build the interpolant from an explicit Hermite table (LatentBiasForce::setGridInterpolation("hermite")): the
     * values and their node derivatives, nodeDerivatives = the 2^d - 1 arrays of masks 1 .. 2^d - 1 one after the
     * other (bit k of the mask = d/d axis k, in table units per unit of z along each differentiated axis; first axis
     * fastest within an array). Each cell is the tensor-product cubic Hermite patch through them (C1 everywhere; no
     * spline fit). An empty nodeDerivatives means zeros.
     */
    void initializeHermite(const std::vector<Axis>& axes, const std::vector<double>& values,
                           const std::vector<double>& nodeDerivatives);
    /**
     * Add a metadynamics Gaussian (as LatentBiasForce::addGridGaussian: height * prod_k gaussianFactor) with its
     * EXACT node derivatives to a Hermite table: arrays[mask] (mask = 0 .. 2^d - 1; 0 = the values) receive
     * height * prod_k (bit k of mask ? f_k' : f_k), f_k' the analytic derivative of the (truncated, stretched) factor:
     * -(u/width) exp(-u^2/2) / (1 - exp(-c^2/2)) for |u| < c, 0 beyond (u = minimum-image (x - center)/width). Only
     * the nodes where a factor or its derivative is non-zero are touched (the kernel's support box; along a periodic
     * axis it wraps, the last point repeating the first). The values get exactly the arithmetic of
     * LatentBiasForce::addGridGaussian. `mirror` (optional) receives the new values too.
     */
    static void addGaussianToTable(const std::vector<Axis>& axes, const std::vector<double>& center,
                                   const std::vector<double>& width, double height, double cutoff,
                                   double* const* arrays, double* mirror = nullptr);
    /**
     * Add an OPES kernel (as LatentBiasForce::addGridKernel) with its EXACT node derivatives to a Hermite table
     * (arrays as addGaussianToTable). Truncated (cutoff > 0): inside r < c the values are
     * weight (exp(-r^2/2) - exp(-c^2/2)) / prod_k(sqrt(2 pi) width_k) (the arithmetic of densityKernelBlock), the
     * derivatives those of the smooth part, weight exp(-r^2/2) / prod_k(sqrt(2 pi) width_k) prod_{k in mask}
     * (-delta_k / width_k^2); nothing outside (the kernel's first derivative jumps there by at most
     * c exp(-c^2/2) / width of the peak's scale, which the C1 Hermite patch smooths over one cell). Untruncated
     * (cutoff 0): the separable normalised Gaussian on the whole grid.
     */
    static void addDensityKernelToTable(const std::vector<Axis>& axes, const DensityKernel& kernel,
                                        double* const* arrays, double* mirror = nullptr);
    /**
     * Hermite table of a kernel sum S (initializeHermite) only: the cubic Hermite interpolant of
     * V = prefactor ln(max(S, 0)/norm + epsilon) whose node values and node derivatives are V's, computed at each node
     * from S and its node derivatives by the chain rule (logNodeDerivatives): with exact node derivatives of S this is
     * Hermite interpolation of the exact V. Value at t (wrapped / clamped as evaluate()), gradient in grad.
     */
    double evaluateLogHermite(const double* t, double* grad, double prefactor, double epsilon, double norm) const;
    /**
     * Turn the 2^ndim node derivatives f[mask] of S at one node into those of V = prefactor ln(max(S, 0)/norm +
     * epsilon): with D = max(S, 0) + epsilon norm, dV = prefactor (S_k / D), d2V = prefactor (S_jk / D - S_j S_k / D^2),
     * d3V = prefactor (S_xyz / D - (S_xy S_z + S_xz S_y + S_yz S_x) / D^2 + 2 S_x S_y S_z / D^3). Where D is not > 0
     * (epsilon norm underflowed): the value prefactor ln(epsilon), zero derivatives.
     */
    static void logNodeDerivatives(int ndim, double* f, double prefactor, double epsilon, double norm);
    /** addGaussianToTable / addDensityKernelToTable on this grid's Hermite table (initializeHermite first). */
    void addExactGaussian(const std::vector<double>& center, const std::vector<double>& width, double height,
                          double cutoff);
    void addExactDensityKernel(const DensityKernel& kernel);

private:
    /** Checks 1-3 axes of >= 2 (periodic: 3) points, min < max, and numValues = the grid's size; returns the size. */
    static std::size_t checkedGridSize(const std::vector<Axis>& axes, std::size_t numValues);
    /** axes, values and the axes' grid points x. */
    void assignTable(const std::vector<Axis>& axes, const std::vector<double>& values);
    void computeNodeDerivative(int axis, const std::vector<double>& source, std::vector<double>& result) const;
    void computeAllNodeDerivatives();
    /** Node derivatives of a spline through `t` (one line along `axis`): the same SplineFitter calls as above. */
    std::vector<double> lineDerivative(int axis, const std::vector<double>& t) const;
    /** The grid coordinates u of the point t (periodic axes wrapped, clamped to the node range) and grad zeroed;
     *  false when t lies outside a non-periodic axis' range (the interpolant is then 0 there). */
    bool gridPoint(const double* t, double* u, double* grad) const;
    /** logParams: null, or {prefactor, epsilon, norm} to interpolate V from the node values of S (evaluateLogHermite) */
    double evaluateGeneric(const double* t, double* grad, const double* logParams = nullptr) const;
    std::vector<Axis> axes;
    std::vector<std::vector<double> > x;   // grid points per axis
    std::vector<double> values;
    bool generic;
    // OpenMM SplineFitter data
    std::vector<double> derivs1D;
    std::vector<std::vector<double> > coeff;
    // generic data: nodeDerivs[mask] = derivative of order mask (bit k: d/d axis k) at every node
    std::vector<std::vector<double> > nodeDerivs;
    /** Column i of the spline-derivative operator of an axis (node derivatives of the line e_i), cached. */
    const std::vector<double>& derivativeColumn(int axis, int i);
    void toHermiteForm();
    std::vector<std::vector<std::vector<double> > > derivColumns;   // [axis][node] (empty: not computed yet)
};

} // namespace LatentBiasPlugin

#endif
