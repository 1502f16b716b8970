/* Local updates of the grid interpolant by OPES kernels (issue 10 item 6): a spherically truncated, shifted kernel
 * is not separable, so LatentBiasGrid::addSeparable cannot apply it; addLocalBlock applies any block of values
 * exactly, through the columns of the per-axis spline-derivative operators. */

#include "internal/LatentBiasGrid.h"
#include "openmm/OpenMMException.h"
#include <algorithm>
#include <cmath>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

namespace {

/** Axes above this size are not given a cached operator (n^2 values): their lines are solved directly. */
const int MaxCachedAxis = 2048;

/** A dense block on the product of per-axis node lists (first list fastest); unused axes hold the list {0}. */
struct Dense {
    vector<int> idx[3];
    vector<double> data;
    size_t size(int k) const {
        return idx[k].size();
    }
};

} // namespace

void LatentBiasGrid::densityKernelBlock(const vector<Axis>& axes, const DensityKernel& kernel,
                                        vector<vector<int> >& indices, vector<double>& block) {
    int ndim = axes.size();
    double cutoff = kernel.cutoff;
    if (!(cutoff > 0))
        throw OpenMMException("LatentBiasGrid::densityKernelBlock: the kernel must be truncated (cutoff > 0)");
    double atCutoff = exp(-0.5 * cutoff * cutoff);
    double cutoff2 = cutoff * cutoff;
    indices.assign(ndim, vector<int>());
    vector<vector<double> > u2(ndim);
    double norm = 1.0;
    for (int k = 0; k < ndim; k++) {
        const Axis& a = axes[k];
        vector<double> points = axisPoints(a);
        double L = a.maxValue - a.minValue;
        int distinct = a.periodic ? a.size - 1 : a.size;
        double sigma = kernel.width[k];
        norm *= sqrt(2.0 * M_PI) * sigma;
        for (int i = 0; i < distinct; i++) {
            double delta = points[i] - kernel.center[k];
            if (a.periodic)
                delta -= L * std::nearbyint(delta / L);   // ties to even, as numpy.rint
            double u = delta / sigma;
            if (fabs(u) < cutoff) {
                indices[k].push_back(i);
                u2[k].push_back(u * u);
            }
        }
        if (a.periodic && !indices[k].empty() && indices[k][0] == 0) {   // the last point is the first one
            indices[k].push_back(a.size - 1);
            u2[k].push_back(u2[k][0]);
        }
        if (indices[k].empty()) {
            block.clear();
            return;
        }
    }
    size_t s[3] = {1, 1, 1};
    for (int k = 0; k < ndim; k++)
        s[k] = indices[k].size();
    block.assign(s[0] * s[1] * s[2], 0.0);
    for (size_t i2 = 0; i2 < s[2]; i2++)
        for (size_t i1 = 0; i1 < s[1]; i1++)
            for (size_t i0 = 0; i0 < s[0]; i0++) {
                // the order of latentbias' np.add.outer: ((u0^2 + u1^2) + u2^2)
                double r2 = u2[0][i0];
                if (ndim > 1)
                    r2 += u2[1][i1];
                if (ndim > 2)
                    r2 += u2[2][i2];
                if (r2 < cutoff2)
                    block[i0 + s[0] * (i1 + s[1] * i2)] = kernel.weight * ((exp(-0.5 * r2) - atCutoff) / norm);
            }
}

void LatentBiasGrid::toHermiteForm() {
    if (!generic) {   // the Hermite form of the same spline: node derivatives instead of per-cell coefficients
        generic = true;
        derivs1D.clear();
        coeff.clear();
        computeAllNodeDerivatives();
    }
}

const vector<double>& LatentBiasGrid::derivativeColumn(int axis, int i) {
    if (derivColumns.size() != axes.size())
        derivColumns.assign(axes.size(), vector<vector<double> >());
    vector<vector<double> >& columns = derivColumns[axis];
    int n = axes[axis].size;
    if ((int) columns.size() != n)
        columns.assign(n, vector<double>());
    vector<double>& column = columns[i];
    if (column.empty()) {
        vector<double> unit(n, 0.0);
        if (axes[axis].periodic && i == n - 1)
            column.assign(n, 0.0);   // the repeated point: its value is carried by the first point's column
        else {
            unit[i] = 1.0;
            if (axes[axis].periodic && i == 0)
                unit[n - 1] = 1.0;
            column = lineDerivative(axis, unit);
        }
    }
    return column;
}

void LatentBiasGrid::addLocalBlock(const vector<vector<int> >& indices, const vector<double>& block) {
    int ndim = axes.size();
    if ((int) indices.size() != ndim)
        throw OpenMMException("LatentBiasGrid::addLocalBlock: one index list per grid dimension is needed");
    Dense base;
    size_t total = 1;
    for (int k = 0; k < 3; k++) {
        if (k < ndim) {
            base.idx[k] = indices[k];
            for (int i : indices[k])
                if (i < 0 || i >= axes[k].size)
                    throw OpenMMException("LatentBiasGrid::addLocalBlock: a node index is outside the grid");
        }
        else
            base.idx[k].assign(1, 0);
        total *= base.idx[k].size();
    }
    if (block.size() != total)
        throw OpenMMException("LatentBiasGrid::addLocalBlock: the block's size differs from the product of its lists");
    if (total == 0)
        return;
    base.data = block;
    toHermiteForm();
    int n[3] = {1, 1, 1};
    for (int k = 0; k < ndim; k++)
        n[k] = axes[k].size;
    size_t stride1 = n[0], stride2 = (size_t) n[0] * n[1];

    // D_axis applied to a dense block: along `axis` the output covers the whole axis
    auto apply = [&](int axis, const Dense& in) {
        Dense out;
        for (int k = 0; k < 3; k++)
            out.idx[k] = in.idx[k];
        out.idx[axis].resize(n[axis]);
        for (int j = 0; j < n[axis]; j++)
            out.idx[axis][j] = j;
        size_t s0 = in.size(0), s1 = in.size(1), s2 = in.size(2);
        size_t o0 = out.size(0), o1 = out.size(1), o2 = out.size(2);
        out.data.assign(o0 * o1 * o2, 0.0);
        if (n[axis] > MaxCachedAxis) {   // a very long axis: solve each line
            vector<double> line(n[axis]);
            size_t inner = axis == 0 ? 1 : (axis == 1 ? s0 : s0 * s1);
            size_t lines = in.data.size() / in.size(axis);
            for (size_t l = 0; l < lines; l++) {
                size_t lowIn = l % inner, high = l / inner;
                fill(line.begin(), line.end(), 0.0);
                for (size_t a = 0; a < in.size(axis); a++)
                    line[in.idx[axis][a]] = in.data[lowIn + inner * (a + in.size(axis) * high)];
                if (axes[axis].periodic)
                    line[n[axis] - 1] = line[0];
                vector<double> d = lineDerivative(axis, line);
                for (int j = 0; j < n[axis]; j++)
                    out.data[lowIn + inner * (j + (size_t) n[axis] * high)] = d[j];
            }
            return out;
        }
        if (axis == 0) {
            for (size_t i2 = 0; i2 < s2; i2++)
                for (size_t i1 = 0; i1 < s1; i1++) {
                    double* row = &out.data[o0 * (i1 + s1 * i2)];
                    const double* src = &in.data[s0 * (i1 + s1 * i2)];
                    for (size_t a = 0; a < s0; a++) {
                        double v = src[a];
                        if (v == 0.0)
                            continue;
                        const double* col = derivativeColumn(0, in.idx[0][a]).data();
                        for (size_t j = 0; j < o0; j++)
                            row[j] += v * col[j];
                    }
                }
        }
        else if (axis == 1) {
            for (size_t i2 = 0; i2 < s2; i2++)
                for (size_t a = 0; a < s1; a++) {
                    const double* col = derivativeColumn(1, in.idx[1][a]).data();
                    const double* src = &in.data[s0 * (a + s1 * i2)];
                    for (size_t j = 0; j < o1; j++) {
                        double c = col[j];
                        if (c == 0.0)
                            continue;
                        double* __restrict dst = &out.data[s0 * (j + o1 * i2)];
                        for (size_t i = 0; i < s0; i++)
                            dst[i] += c * src[i];
                    }
                }
        }
        else {
            size_t slab = s0 * s1;
            for (size_t a = 0; a < s2; a++) {
                const double* col = derivativeColumn(2, in.idx[2][a]).data();
                const double* src = &in.data[slab * a];
                for (size_t j = 0; j < o2; j++) {
                    double c = col[j];
                    if (c == 0.0)
                        continue;
                    double* __restrict dst = &out.data[slab * j];
                    for (size_t i = 0; i < slab; i++)
                        dst[i] += c * src[i];
                }
            }
        }
        return out;
    };
    auto scatter = [&](int mask, const Dense& d) {
        double* target = nodeDerivs[mask].data();
        size_t s0 = d.size(0), s1 = d.size(1), s2 = d.size(2);
        for (size_t i2 = 0; i2 < s2; i2++)
            for (size_t i1 = 0; i1 < s1; i1++) {
                size_t offset = d.idx[1][i1] * stride1 + d.idx[2][i2] * (ndim > 2 ? stride2 : 0);
                const double* src = &d.data[s0 * (i1 + s1 * i2)];
                for (size_t i0 = 0; i0 < s0; i0++) {
                    size_t node = offset + d.idx[0][i0];
                    target[node] += src[i0];
                    if (mask == 0)
                        values[node] = target[node];
                }
            }
    };
    // the order of computeAllNodeDerivatives (OpenMM's): d/dx, d/dy, d/dz, d2/dxdy = x of d/dy, d2/dydz = y of d/dz,
    // d2/dxdz = z of d/dx, d3/dxdydz = x of d2/dydz
    scatter(0, base);
    Dense d1 = apply(0, base);
    scatter(1, d1);
    if (ndim >= 2) {
        Dense d2 = apply(1, base);
        scatter(2, d2);
        scatter(3, apply(0, d2));
    }
    if (ndim == 3) {
        Dense d4 = apply(2, base);
        scatter(4, d4);
        Dense d6 = apply(1, d4);
        scatter(6, d6);
        scatter(5, apply(2, d1));
        scatter(7, apply(0, d6));
    }
}

void LatentBiasGrid::addDensityKernels(const vector<DensityKernel>& kernels) {
    int ndim = axes.size();
    // truncated kernels: one block on the union of their node lists
    vector<vector<int> > unionIdx(ndim);
    vector<vector<vector<int> > > idx;
    vector<vector<double> > blocks;
    for (const DensityKernel& kernel : kernels) {
        if ((int) kernel.center.size() != ndim || (int) kernel.width.size() != ndim)
            throw OpenMMException("LatentBiasGrid::addDensityKernels: one centre and width per grid dimension");
        if (kernel.cutoff > 0) {
            idx.emplace_back();
            blocks.emplace_back();
            densityKernelBlock(axes, kernel, idx.back(), blocks.back());
            if (blocks.back().empty()) {
                idx.pop_back();
                blocks.pop_back();
                continue;
            }
            for (int k = 0; k < ndim; k++)
                unionIdx[k].insert(unionIdx[k].end(), idx.back()[k].begin(), idx.back()[k].end());
        }
        else {   // the untruncated normalised Gaussian is separable: weight * prod_k exp(-u_k^2/2)/(sqrt(2 pi) w_k)
            vector<vector<double> > factors;
            for (int k = 0; k < ndim; k++) {
                vector<double> f = gaussianFactor(axes[k], kernel.center[k], kernel.width[k], 0.0);
                double norm = sqrt(2.0 * M_PI) * kernel.width[k];
                for (double& v : f)
                    v /= norm;
                factors.push_back(f);
            }
            addSeparable(factors, kernel.weight);
        }
    }
    if (blocks.empty())
        return;
    size_t s[3] = {1, 1, 1};
    vector<vector<int> > position(ndim);
    for (int k = 0; k < ndim; k++) {
        sort(unionIdx[k].begin(), unionIdx[k].end());
        unionIdx[k].erase(unique(unionIdx[k].begin(), unionIdx[k].end()), unionIdx[k].end());
        s[k] = unionIdx[k].size();
        position[k].assign(axes[k].size, -1);
        for (size_t j = 0; j < s[k]; j++)
            position[k][unionIdx[k][j]] = j;
    }
    vector<double> total(s[0] * s[1] * s[2], 0.0);
    for (size_t b = 0; b < blocks.size(); b++) {
        size_t t[3] = {1, 1, 1};
        for (int k = 0; k < ndim; k++)
            t[k] = idx[b][k].size();
        for (size_t i2 = 0; i2 < t[2]; i2++)
            for (size_t i1 = 0; i1 < t[1]; i1++)
                for (size_t i0 = 0; i0 < t[0]; i0++) {
                    size_t p = position[0][idx[b][0][i0]];
                    if (ndim > 1)
                        p += s[0] * position[1][idx[b][1][i1]];
                    if (ndim > 2)
                        p += s[0] * s[1] * position[2][idx[b][2][i2]];
                    total[p] += blocks[b][i0 + t[0] * (i1 + t[1] * i2)];
                }
    }
    addLocalBlock(unionIdx, total);
}
