#include "internal/LatentBiasGrid.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/SplineFitter.h"
#include <algorithm>
#include <cmath>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

LatentBiasGrid::LatentBiasGrid() : generic(false) {
}

double LatentBiasGrid::wrap(double t, double minValue, double maxValue) {
    double L = maxValue - minValue;
    double s = (t - minValue) / L;
    return minValue + L * (s - floor(s));
}

size_t LatentBiasGrid::checkedGridSize(const vector<Axis>& newAxes, size_t numValues) {
    if (newAxes.size() < 1 || newAxes.size() > 3)
        throw OpenMMException("LatentBiasGrid: the grid needs 1, 2 or 3 dimensions");
    size_t total = 1;
    for (const Axis& a : newAxes) {
        if (a.size < (a.periodic ? 3 : 2))
            throw OpenMMException("LatentBiasGrid: too few grid points along a dimension");
        if (!(a.minValue < a.maxValue))
            throw OpenMMException("LatentBiasGrid: minValue must be smaller than maxValue");
        total *= a.size;
    }
    if (numValues != total)
        throw OpenMMException("LatentBiasGrid: wrong number of grid values");
    return total;
}

void LatentBiasGrid::assignTable(const vector<Axis>& newAxes, const vector<double>& newValues) {
    axes = newAxes;
    values = newValues;
    x.assign(axes.size(), vector<double>());
    for (size_t k = 0; k < axes.size(); k++)
        x[k] = axisPoints(axes[k]);
}

int LatentBiasGrid::periodicPlaneMismatch(const double* a, const int n[3], const vector<bool>& periodic) {
    const int stride[3] = {1, n[0], n[0] * n[1]};
    for (size_t k = 0; k < periodic.size() && k < 3; k++) {
        if (!periodic[k])
            continue;
        int p = (k + 1) % 3, q = (k + 2) % 3;
        for (int i = 0; i < n[p]; i++)
            for (int j = 0; j < n[q]; j++) {
                int base = i * stride[p] + j * stride[q];
                if (a[base] != a[base + (n[k] - 1) * stride[k]])
                    return (int) k;
            }
    }
    return -1;
}

void LatentBiasGrid::initialize(const vector<Axis>& newAxes, const vector<double>& newValues, bool forceGeneric) {
    checkedGridSize(newAxes, newValues.size());
    int ndim = newAxes.size();
    assignTable(newAxes, newValues);
    bool uniform = true;
    for (const Axis& a : axes)
        uniform &= (a.periodic == axes[0].periodic);
    generic = forceGeneric || !uniform;
    derivs1D.clear();
    coeff.clear();
    nodeDerivs.clear();
    derivColumns.clear();
    if (!generic) {
        bool periodic = axes[0].periodic;
        if (ndim == 1)
            SplineFitter::createSpline(x[0], values, periodic, derivs1D);
        else if (ndim == 2)
            SplineFitter::create2DSpline(x[0], x[1], values, periodic, coeff);
        else
            SplineFitter::create3DSpline(x[0], x[1], x[2], values, periodic, coeff);
        return;
    }
    computeAllNodeDerivatives();
}

vector<double> LatentBiasGrid::axisPoints(const Axis& a) {
    vector<double> points(a.size);
    // The same arithmetic as ReferenceContinuous{1,2,3}DFunction.
    for (int i = 0; i < a.size; i++)
        points[i] = a.minValue + i * (a.maxValue - a.minValue) / (a.size - 1);
    return points;
}

vector<double> LatentBiasGrid::gaussianFactor(const Axis& a, double center, double width, double cutoff) {
    vector<double> points = axisPoints(a), g(a.size);
    double L = a.maxValue - a.minValue;
    double atCutoff = cutoff > 0 ? exp(-0.5 * cutoff * cutoff) : 0.0;
    for (int i = 0; i < a.size; i++) {
        double delta = points[i] - center;
        if (a.periodic)
            delta -= L * std::nearbyint(delta / L);   // ties to even, as numpy.round
        double u = delta / width;
        if (cutoff > 0)
            g[i] = fabs(u) < cutoff ? (exp(-0.5 * u * u) - atCutoff) / (1.0 - atCutoff) : 0.0;
        else
            g[i] = exp(-0.5 * u * u);
    }
    if (a.periodic)
        g[a.size - 1] = g[0];
    return g;
}

vector<double> LatentBiasGrid::lineDerivative(int axis, const vector<double>& t) const {
    vector<double> deriv, result(t.size());
    SplineFitter::createSpline(x[axis], t, axes[axis].periodic, deriv);
    for (size_t m = 0; m < t.size(); m++)
        result[m] = SplineFitter::evaluateSplineDerivative(x[axis], t, deriv, x[axis][m]);
    return result;
}

void LatentBiasGrid::addSeparable(const vector<vector<double> >& factors, double height) {
    int ndim = axes.size();
    if ((int) factors.size() != ndim)
        throw OpenMMException("LatentBiasGrid::addSeparable: one factor per grid dimension is needed");
    for (int k = 0; k < ndim; k++)
        if ((int) factors[k].size() != axes[k].size)
            throw OpenMMException("LatentBiasGrid::addSeparable: a factor's length differs from its axis size");
    if (!generic) {   // the Hermite form of the same spline: node derivatives instead of per-cell coefficients
        generic = true;
        derivs1D.clear();
        coeff.clear();
        computeAllNodeDerivatives();
    }
    // per axis: factor (order 0) and its spline derivative at the nodes (order 1), and for each order the
    // contiguous node range [lo, hi] outside which it is below 1e-17 of the factor's peak (times the spacing for
    // the derivative): contributions there are below double rounding of the values. The range is taken per order,
    // so an array that is not differentiated along an axis touches only the factor's own support there (a
    // truncated Gaussian's factor is exactly zero beyond its cutoff, while the spline derivative of any factor
    // has tails). A contiguous range (rather than a list of nodes) lets the innermost loop run over adjacent
    // memory, which the compiler vectorises.
    vector<double> part[3][2];
    int lo[3][2] = {{0, 0}, {0, 0}, {0, 0}}, hi[3][2] = {{0, 0}, {0, 0}, {0, 0}};
    for (int k = 0; k < ndim; k++) {
        part[k][0] = factors[k];
        part[k][1] = lineDerivative(k, factors[k]);
        double peak = 0.0;
        for (double f : factors[k])
            peak = max(peak, fabs(f));
        double h = x[k][1] - x[k][0];
        for (int order = 0; order < 2; order++) {
            double scale = order == 0 ? 1.0 : h;
            lo[k][order] = axes[k].size;
            hi[k][order] = -1;
            for (int i = 0; i < axes[k].size; i++)
                if (fabs(part[k][order][i]) * scale > 1e-17 * peak) {
                    lo[k][order] = min(lo[k][order], i);
                    hi[k][order] = i;
                }
        }
        if (hi[k][0] < 0)
            return;   // a zero Gaussian (height 0 or all factors underflowed): nothing changes
    }
    for (int k = ndim; k < 3; k++) {
        part[k][0].assign(1, 1.0);
        part[k][1].assign(1, 0.0);
        lo[k][0] = lo[k][1] = hi[k][0] = hi[k][1] = 0;
    }
    size_t stride1 = axes[0].size, stride2 = ndim > 1 ? (size_t) axes[0].size * axes[1].size : 0;
    int nmask = 1 << ndim;
    // per array (mask): the same products in the same order for every node, the innermost loop along axis 0
    for (int mask = 0; mask < nmask; mask++) {
        int b0 = mask & 1, b1 = (mask >> 1) & 1, b2 = (mask >> 2) & 1;
        if (hi[0][b0] < lo[0][b0] || hi[1][b1] < lo[1][b1] || hi[2][b2] < lo[2][b2])
            continue;   // this derivative of the factor vanishes (e.g. a constant factor along an axis)
        int len0 = hi[0][b0] - lo[0][b0] + 1;
        const double* f0 = part[0][b0].data() + lo[0][b0];
        const double* f1 = part[1][b1].data();
        const double* f2 = part[2][b2].data();
        double* target = nodeDerivs[mask].data();
        double* valueTarget = values.data();
        for (int i2 = lo[2][b2]; i2 <= hi[2][b2]; i2++) {
            double a2 = height * f2[i2];
            for (int i1 = lo[1][b1]; i1 <= hi[1][b1]; i1++) {
                double a12 = a2 * f1[i1];
                size_t offset = lo[0][b0] + i1 * stride1 + i2 * stride2;
                double* __restrict row = target + offset;
                for (int i = 0; i < len0; i++)
                    row[i] += a12 * f0[i];
                if (mask == 0)
                    std::copy(row, row + len0, valueTarget + offset);
            }
        }
    }
}

void LatentBiasGrid::computeAllNodeDerivatives() {
    int ndim = axes.size();
    nodeDerivs.assign(1 << ndim, vector<double>());
    nodeDerivs[0] = values;
    if (ndim == 1) {
        computeNodeDerivative(0, nodeDerivs[0], nodeDerivs[1]);
    }
    else if (ndim == 2) {
        computeNodeDerivative(0, nodeDerivs[0], nodeDerivs[1]);   // d/dx
        computeNodeDerivative(1, nodeDerivs[0], nodeDerivs[2]);   // d/dy
        computeNodeDerivative(0, nodeDerivs[2], nodeDerivs[3]);   // d2/dxdy
    }
    else {
        computeNodeDerivative(0, nodeDerivs[0], nodeDerivs[1]);   // d/dx
        computeNodeDerivative(1, nodeDerivs[0], nodeDerivs[2]);   // d/dy
        computeNodeDerivative(2, nodeDerivs[0], nodeDerivs[4]);   // d/dz
        computeNodeDerivative(0, nodeDerivs[2], nodeDerivs[3]);   // d2/dxdy
        computeNodeDerivative(1, nodeDerivs[4], nodeDerivs[6]);   // d2/dydz
        computeNodeDerivative(2, nodeDerivs[1], nodeDerivs[5]);   // d2/dxdz
        computeNodeDerivative(0, nodeDerivs[6], nodeDerivs[7]);   // d3/dxdydz
    }
}

void LatentBiasGrid::computeNodeDerivative(int axis, const vector<double>& source, vector<double>& result) const {
    int ndim = axes.size();
    int n[3] = {1, 1, 1};
    for (int k = 0; k < ndim; k++)
        n[k] = axes[k].size;
    int stride[3] = {1, n[0], n[0] * n[1]};
    result.assign(source.size(), 0.0);
    int len = n[axis];
    vector<double> t(len), deriv(len);
    // Loop over all lines parallel to `axis`.
    int other1 = (axis + 1) % 3, other2 = (axis + 2) % 3;
    for (int i = 0; i < n[other1]; i++) {
        for (int j = 0; j < n[other2]; j++) {
            int base = i * stride[other1] + j * stride[other2];
            for (int m = 0; m < len; m++)
                t[m] = source[base + m * stride[axis]];
            SplineFitter::createSpline(x[axis], t, axes[axis].periodic, deriv);
            for (int m = 0; m < len; m++)
                result[base + m * stride[axis]] = SplineFitter::evaluateSplineDerivative(x[axis], t, deriv, x[axis][m]);
        }
    }
}

bool LatentBiasGrid::gridPoint(const double* t, double* u, double* grad) const {
    for (int k = 0; k < (int) axes.size(); k++) {
        grad[k] = 0.0;
        const Axis& a = axes[k];
        u[k] = a.periodic ? wrap(t[k], a.minValue, a.maxValue) : t[k];
        // ReferenceContinuous*DFunction returns 0 (value and derivatives) outside the range.
        if (!(u[k] >= a.minValue && u[k] <= a.maxValue))
            return false;
        // The last grid point min + (n-1)*((max-min)/(n-1)) can differ from max by an ulp; SplineFitter would
        // throw for u = max (e.g. z clamped to the edge), so stay inside the node range.
        u[k] = min(max(u[k], x[k].front()), x[k].back());
    }
    return true;
}

double LatentBiasGrid::evaluate(const double* t, double* grad) const {
    int ndim = axes.size();
    double u[3];
    if (!gridPoint(t, u, grad))
        return 0.0;
    if (generic)
        return evaluateGeneric(u, grad);
    if (ndim == 1) {
        grad[0] = SplineFitter::evaluateSplineDerivative(x[0], values, derivs1D, u[0]);
        return SplineFitter::evaluateSpline(x[0], values, derivs1D, u[0]);
    }
    if (ndim == 2) {
        SplineFitter::evaluate2DSplineDerivatives(x[0], x[1], values, coeff, u[0], u[1], grad[0], grad[1]);
        return SplineFitter::evaluate2DSpline(x[0], x[1], values, coeff, u[0], u[1]);
    }
    SplineFitter::evaluate3DSplineDerivatives(x[0], x[1], x[2], values, coeff, u[0], u[1], u[2], grad[0], grad[1], grad[2]);
    return SplineFitter::evaluate3DSpline(x[0], x[1], x[2], values, coeff, u[0], u[1], u[2]);
}

double LatentBiasGrid::evaluateLogHermite(const double* t, double* grad, double prefactor, double epsilon,
                                          double norm) const {
    if (!generic || nodeDerivs.size() != (size_t) (1 << axes.size()))
        throw OpenMMException("LatentBiasGrid::evaluateLogHermite: the grid is not a Hermite table");
    double u[3];
    if (!gridPoint(t, u, grad))
        return prefactor * log(epsilon);   // as S = 0 outside (see evaluate)
    double logParams[3] = {prefactor, epsilon, norm};
    return evaluateGeneric(u, grad, logParams);
}

void LatentBiasGrid::logNodeDerivatives(int ndim, double* f, double prefactor, double epsilon, double norm) {
    int nmask = 1 << ndim;
    double p = max(f[0], 0.0);
    double D = p + epsilon * norm;
    if (!(D > 0)) {
        f[0] = prefactor * log(epsilon);
        for (int mask = 1; mask < nmask; mask++)
            f[mask] = 0.0;
        return;
    }
    double inv = 1.0 / D, inv2 = inv * inv;
    double v[8];
    v[0] = prefactor * log(p / norm + epsilon);
    for (int mask = 1; mask < nmask; mask++) {
        int bits = (mask & 1) + ((mask >> 1) & 1) + ((mask >> 2) & 1);
        if (bits == 1)
            v[mask] = f[mask] * inv;
        else if (bits == 2) {
            int a = mask & -mask, b = mask ^ a;   // the two single-axis masks
            v[mask] = f[mask] * inv - f[a] * f[b] * inv2;
        }
        else
            v[mask] = f[7] * inv - (f[3] * f[4] + f[5] * f[2] + f[6] * f[1]) * inv2 + 2.0 * f[1] * f[2] * f[4] * inv2 * inv;
        v[mask] *= prefactor;
    }
    for (int mask = 0; mask < nmask; mask++)
        f[mask] = v[mask];
}

double LatentBiasGrid::evaluateGeneric(const double* u, double* grad, const double* logParams) const {
    int ndim = axes.size();
    int lower[3] = {0, 0, 0};
    // basis[k][c][o]: value of the Hermite basis function of corner c (0 = lower, 1 = upper) and derivative
    // order o (0: value weight, 1: slope weight) along axis k; dbasis: its derivative with respect to u[k].
    double basis[3][2][2], dbasis[3][2][2];
    for (int k = 0; k < ndim; k++) {
        const vector<double>& xs = x[k];
        // The same binary search as SplineFitter, so cells agree at grid points.
        int lo = 0, hi = (int) xs.size() - 1;
        while (hi - lo > 1) {
            int middle = (hi + lo) / 2;
            if (xs[middle] > u[k])
                hi = middle;
            else
                lo = middle;
        }
        lower[k] = lo;
        double h = xs[hi] - xs[lo];
        double s = (u[k] - xs[lo]) / h;
        double s2 = s * s, s3 = s2 * s;
        basis[k][0][0] = 1.0 - 3.0 * s2 + 2.0 * s3;
        basis[k][1][0] = 3.0 * s2 - 2.0 * s3;
        basis[k][0][1] = h * (s - 2.0 * s2 + s3);
        basis[k][1][1] = h * (s3 - s2);
        dbasis[k][0][0] = (6.0 * s2 - 6.0 * s) / h;
        dbasis[k][1][0] = (6.0 * s - 6.0 * s2) / h;
        dbasis[k][0][1] = 1.0 - 4.0 * s + 3.0 * s2;
        dbasis[k][1][1] = 3.0 * s2 - 2.0 * s;
    }
    int stride[3] = {1, axes[0].size, ndim > 1 ? axes[0].size * axes[1].size : 0};
    double value = 0.0;
    double g[3] = {0.0, 0.0, 0.0};
    int ncorner = 1 << ndim;
    for (int corner = 0; corner < ncorner; corner++) {
        int node = 0;
        for (int k = 0; k < ndim; k++)
            node += (lower[k] + ((corner >> k) & 1)) * stride[k];
        double nodeValues[8];
        for (int mask = 0; mask < ncorner; mask++)
            nodeValues[mask] = nodeDerivs[mask][node];
        if (logParams != nullptr)
            logNodeDerivatives(ndim, nodeValues, logParams[0], logParams[1], logParams[2]);
        for (int mask = 0; mask < ncorner; mask++) {
            double f = nodeValues[mask];
            double b[3], db[3];
            for (int k = 0; k < ndim; k++) {
                int c = (corner >> k) & 1, o = (mask >> k) & 1;
                b[k] = basis[k][c][o];
                db[k] = dbasis[k][c][o];
            }
            double prod = f;
            for (int k = 0; k < ndim; k++)
                prod *= b[k];
            value += prod;
            for (int j = 0; j < ndim; j++) {
                double p = f * db[j];
                for (int k = 0; k < ndim; k++)
                    if (k != j)
                        p *= b[k];
                g[j] += p;
            }
        }
    }
    for (int k = 0; k < ndim; k++)
        grad[k] = g[k];
    return value;
}
