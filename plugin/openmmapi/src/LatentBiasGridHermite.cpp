/* Hermite tables with exact node derivatives (issue 10 item 6): every deposit is an analytic kernel, so its node
 * values AND node derivatives (d/dx, d/dy, d2/dxdy, ..., d3/dxdydz) are known in closed form and are non-zero only on
 * the kernel's support. A table of them, interpolated by tensor-product cubic Hermite patches, needs no spline fit:
 * a deposit touches only its support (no global derivative tails), and the interpolant of a kernel sum is the sum of
 * the interpolants of its kernels. */

#include "internal/LatentBiasGrid.h"
#include "openmm/OpenMMException.h"
#include <cmath>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

namespace {

/** Minimum-image differences points[i] - center along an axis (the arithmetic of gaussianFactor). */
vector<double> axisDeltas(const LatentBiasGrid::Axis& a, double center) {
    vector<double> points = LatentBiasGrid::axisPoints(a), delta(a.size);
    double L = a.maxValue - a.minValue;
    for (int i = 0; i < a.size; i++) {
        double d = points[i] - center;
        if (a.periodic)
            d -= L * std::nearbyint(d / L);   // ties to even, as numpy.round
        delta[i] = d;
    }
    if (a.periodic)
        delta[a.size - 1] = delta[0];
    return delta;
}

/**
 * Add a separable kernel height * prod_k f_k with derivative factors d_k to the arrays, on the nodes where f_k or d_k is
 * non-zero along every axis. The value arithmetic is that of LatentBiasForce::addGridGaussian,
 * height * f_0 * f_1 * f_2 (f_k = {1} for unused axes).
 */
void addSeparableExact(const vector<LatentBiasGrid::Axis>& axes, const vector<vector<double> >& f,
                       const vector<vector<double> >& d, double height, double* const* arrays, double* mirror) {
    int ndim = axes.size();
    vector<int> nodes[3];
    vector<double> part[3][2];
    for (int k = 0; k < 3; k++) {
        if (k >= ndim) {
            nodes[k].assign(1, 0);
            part[k][0].assign(1, 1.0);
            part[k][1].assign(1, 0.0);
            continue;
        }
        for (int i = 0; i < axes[k].size; i++)
            if (f[k][i] != 0.0 || d[k][i] != 0.0) {
                nodes[k].push_back(i);
                part[k][0].push_back(f[k][i]);
                part[k][1].push_back(d[k][i]);
            }
        if (nodes[k].empty())
            return;
    }
    size_t stride1 = axes[0].size, stride2 = ndim > 1 ? (size_t) axes[0].size * axes[1].size : 0;
    int nmask = 1 << ndim;
    size_t s0 = nodes[0].size(), s1 = nodes[1].size(), s2 = nodes[2].size();
    for (size_t j2 = 0; j2 < s2; j2++)
        for (size_t j1 = 0; j1 < s1; j1++) {
            size_t offset = nodes[1][j1] * stride1 + (ndim > 2 ? nodes[2][j2] * stride2 : 0);
            for (size_t j0 = 0; j0 < s0; j0++) {
                size_t node = offset + nodes[0][j0];
                for (int mask = 0; mask < nmask; mask++) {
                    int b0 = mask & 1, b1 = (mask >> 1) & 1, b2 = (mask >> 2) & 1;
                    arrays[mask][node] += height * part[0][b0][j0] * part[1][b1][j1] * part[2][b2][j2];
                }
                if (mirror != nullptr)
                    mirror[node] = arrays[0][node];
            }
        }
}

} // namespace

void LatentBiasGrid::addGaussianToTable(const vector<Axis>& axes, const vector<double>& center,
                                        const vector<double>& width, double height, double cutoff,
                                        double* const* arrays, double* mirror) {
    int ndim = axes.size();
    if ((int) center.size() != ndim || (int) width.size() != ndim)
        throw OpenMMException("LatentBiasGrid::addGaussianToTable: one centre and width per grid dimension");
    vector<vector<double> > f(ndim), d(ndim);
    double atCutoff = cutoff > 0 ? exp(-0.5 * cutoff * cutoff) : 0.0;
    for (int k = 0; k < ndim; k++) {
        f[k] = gaussianFactor(axes[k], center[k], width[k], cutoff);
        vector<double> delta = axisDeltas(axes[k], center[k]);
        d[k].assign(axes[k].size, 0.0);
        for (int i = 0; i < axes[k].size; i++) {
            double u = delta[i] / width[k];
            if (cutoff > 0)
                d[k][i] = fabs(u) < cutoff ? -(u / width[k]) * exp(-0.5 * u * u) / (1.0 - atCutoff) : 0.0;
            else
                d[k][i] = -(u / width[k]) * exp(-0.5 * u * u);
        }
    }
    addSeparableExact(axes, f, d, height, arrays, mirror);
}

void LatentBiasGrid::addDensityKernelToTable(const vector<Axis>& axes, const DensityKernel& kernel,
                                             double* const* arrays, double* mirror) {
    int ndim = axes.size();
    if ((int) kernel.center.size() != ndim || (int) kernel.width.size() != ndim)
        throw OpenMMException("LatentBiasGrid::addDensityKernelToTable: one centre and width per grid dimension");
    if (!(kernel.cutoff > 0)) {
        // the untruncated normalised Gaussian: separable, with the arithmetic of LatentBiasForce::addGridKernel
        vector<vector<double> > f(ndim), d(ndim);
        for (int k = 0; k < ndim; k++) {
            f[k] = gaussianFactor(axes[k], kernel.center[k], kernel.width[k], 0.0);
            double norm = sqrt(2.0 * M_PI) * kernel.width[k];
            for (double& v : f[k])
                v /= norm;
            vector<double> delta = axisDeltas(axes[k], kernel.center[k]);
            d[k].resize(axes[k].size);
            for (int i = 0; i < axes[k].size; i++)
                d[k][i] = -(delta[i] / (kernel.width[k] * kernel.width[k])) * f[k][i];
        }
        addSeparableExact(axes, f, d, kernel.weight, arrays, mirror);
        return;
    }
    // the support: per axis the nodes within cutoff widths of the centre (the lists of densityKernelBlock)
    double cutoff = kernel.cutoff, cutoff2 = cutoff * cutoff, atCutoff = exp(-0.5 * cutoff * cutoff);
    vector<int> nodes[3];
    vector<double> u2[3], slope[3];   // slope = -delta/width^2: d/dx of -r^2/2
    double norm = 1.0;
    for (int k = 0; k < 3; k++) {
        if (k >= ndim) {
            nodes[k].assign(1, 0);
            u2[k].assign(1, 0.0);
            slope[k].assign(1, 0.0);
            continue;
        }
        const Axis& a = axes[k];
        double sigma = kernel.width[k];
        norm *= sqrt(2.0 * M_PI) * sigma;
        vector<double> delta = axisDeltas(a, kernel.center[k]);
        int distinct = a.periodic ? a.size - 1 : a.size;
        for (int i = 0; i < distinct; i++) {
            double u = delta[i] / sigma;
            if (fabs(u) < cutoff) {
                nodes[k].push_back(i);
                u2[k].push_back(u * u);
                slope[k].push_back(-(delta[i] / (sigma * sigma)));
            }
        }
        if (a.periodic && !nodes[k].empty() && nodes[k][0] == 0) {   // the last point is the first one
            nodes[k].push_back(a.size - 1);
            u2[k].push_back(u2[k][0]);
            slope[k].push_back(slope[k][0]);
        }
        if (nodes[k].empty())
            return;
    }
    size_t stride1 = axes[0].size, stride2 = ndim > 1 ? (size_t) axes[0].size * axes[1].size : 0;
    int nmask = 1 << ndim;
    size_t s0 = nodes[0].size(), s1 = nodes[1].size(), s2 = nodes[2].size();
    for (size_t j2 = 0; j2 < s2; j2++)
        for (size_t j1 = 0; j1 < s1; j1++) {
            size_t offset = nodes[1][j1] * stride1 + (ndim > 2 ? nodes[2][j2] * stride2 : 0);
            for (size_t j0 = 0; j0 < s0; j0++) {
                // the order of densityKernelBlock (latentbias' np.add.outer): ((u0^2 + u1^2) + u2^2)
                double r2 = u2[0][j0];
                if (ndim > 1)
                    r2 += u2[1][j1];
                if (ndim > 2)
                    r2 += u2[2][j2];
                if (!(r2 < cutoff2))
                    continue;
                size_t node = offset + nodes[0][j0];
                double e = exp(-0.5 * r2);
                arrays[0][node] += kernel.weight * ((e - atCutoff) / norm);
                double g = kernel.weight * (e / norm);
                for (int mask = 1; mask < nmask; mask++) {
                    double v = g;
                    if (mask & 1)
                        v *= slope[0][j0];
                    if (mask & 2)
                        v *= slope[1][j1];
                    if (mask & 4)
                        v *= slope[2][j2];
                    arrays[mask][node] += v;
                }
                if (mirror != nullptr)
                    mirror[node] = arrays[0][node];
            }
        }
}

void LatentBiasGrid::initializeHermite(const vector<Axis>& newAxes, const vector<double>& newValues,
                                       const vector<double>& nodeDerivatives) {
    size_t total = checkedGridSize(newAxes, newValues.size());
    int nmask = 1 << newAxes.size();
    if (!nodeDerivatives.empty() && nodeDerivatives.size() != (nmask - 1) * total)
        throw OpenMMException("LatentBiasGrid: wrong number of node derivatives (2^d - 1 arrays of the grid's size)");
    assignTable(newAxes, newValues);
    generic = true;
    derivs1D.clear();
    coeff.clear();
    derivColumns.clear();
    nodeDerivs.assign(nmask, vector<double>());
    nodeDerivs[0] = values;
    for (int mask = 1; mask < nmask; mask++) {
        if (nodeDerivatives.empty())
            nodeDerivs[mask].assign(total, 0.0);
        else
            nodeDerivs[mask].assign(nodeDerivatives.begin() + (mask - 1) * total, nodeDerivatives.begin() + mask * total);
    }
}

void LatentBiasGrid::addExactGaussian(const vector<double>& center, const vector<double>& width, double height,
                                      double cutoff) {
    if (!generic || nodeDerivs.size() != (size_t) (1 << axes.size()))
        throw OpenMMException("LatentBiasGrid::addExactGaussian: the grid is not a Hermite table (initializeHermite)");
    vector<double*> arrays;
    for (vector<double>& a : nodeDerivs)
        arrays.push_back(a.data());
    addGaussianToTable(axes, center, width, height, cutoff, arrays.data(), values.data());
}

void LatentBiasGrid::addExactDensityKernel(const DensityKernel& kernel) {
    if (!generic || nodeDerivs.size() != (size_t) (1 << axes.size()))
        throw OpenMMException("LatentBiasGrid::addExactDensityKernel: the grid is not a Hermite table "
                              "(initializeHermite)");
    vector<double*> arrays;
    for (vector<double>& a : nodeDerivs)
        arrays.push_back(a.data());
    addDensityKernelToTable(axes, kernel, arrays.data(), values.data());
}
