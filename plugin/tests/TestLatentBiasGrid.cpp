/*
 * The grid interpolation: the per-axis (generic) construction used for mixed periodicity must reproduce OpenMM's
 * SplineFitter 1D/2D/3D splines when the periodicity is uniform; gradients match finite differences; walls and
 * clamping follow CustomCVBackend's expression.
 */
#include "TestUtilities.h"
#include "internal/LatentBiasEvaluator.h"
#include "internal/LatentBiasGrid.h"
#include "openmm/internal/SplineFitter.h"

using namespace LatentBiasPlugin;
using namespace LatentBiasTest;
using namespace std;

static vector<double> smoothValues(const vector<LatentBiasGrid::Axis>& axes, int seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    double a = u(rng), b = u(rng), c = u(rng), e = u(rng);
    int n[3] = {1, 1, 1};
    for (size_t k = 0; k < axes.size(); k++)
        n[k] = axes[k].size;
    vector<double> values(n[0] * n[1] * n[2]);
    for (int i2 = 0; i2 < n[2]; i2++)
        for (int i1 = 0; i1 < n[1]; i1++)
            for (int i0 = 0; i0 < n[0]; i0++) {
                int idx[3] = {i0, i1, i2};
                double s[3] = {0, 0, 0};
                for (size_t k = 0; k < axes.size(); k++)
                    s[k] = 2 * M_PI * idx[k] / (axes[k].size - 1);  // periodic in index space
                values[i0 + n[0] * (i1 + n[1] * i2)] = 3.0 * sin(s[0] + a) + 2.0 * cos(s[1] + b) * sin(s[0] + c)
                                                         + 1.5 * cos(s[2] + e) + 0.5 * sin(s[1] + s[2]) + u(rng) * 0.3;
            }
    // make periodic planes exact duplicates
    for (size_t k = 0; k < axes.size(); k++) {
        if (!axes[k].periodic)
            continue;
        int stride[3] = {1, n[0], n[0] * n[1]};
        int a1 = (k + 1) % 3, a2 = (k + 2) % 3;
        for (int i = 0; i < n[a1]; i++)
            for (int j = 0; j < n[a2]; j++) {
                int base = i * stride[a1] + j * stride[a2];
                values[base + (n[k] - 1) * stride[k]] = values[base];
            }
    }
    return values;
}

static vector<vector<double>> randomPoints(const vector<LatentBiasGrid::Axis>& axes, int count, int seed) {
    std::mt19937 rng(seed);
    vector<vector<double>> points;
    for (int i = 0; i < count; i++) {
        vector<double> p;
        for (const auto& a : axes) {
            std::uniform_real_distribution<double> u(a.minValue, a.maxValue);
            p.push_back(u(rng));
        }
        points.push_back(p);
    }
    // grid points and the upper edges too
    vector<double> lo, hi;
    for (const auto& a : axes) {
        lo.push_back(a.minValue);
        hi.push_back(a.maxValue);
    }
    points.push_back(lo);
    points.push_back(hi);
    return points;
}

static void compareGenericWithSplineFitter(int ndim, bool periodic) {
    vector<LatentBiasGrid::Axis> axes;
    int sizes[3] = {7, 6, 5};
    double mins[3] = {-1.0, 0.5, -3.0}, maxs[3] = {2.0, 1.7, 3.0};
    for (int k = 0; k < ndim; k++)
        axes.push_back({mins[k], maxs[k], sizes[k], periodic});
    vector<double> values = smoothValues(axes, 11 + ndim);
    LatentBiasGrid openmm, generic;
    openmm.initialize(axes, values);
    generic.initialize(axes, values, true);
    ASSERT(openmm.usesOpenMMSplineFitter());
    ASSERT(!generic.usesOpenMMSplineFitter());
    for (const auto& p : randomPoints(axes, 200, 5)) {
        double g1[3], g2[3];
        double v1 = openmm.evaluate(p.data(), g1);
        double v2 = generic.evaluate(p.data(), g2);
        ASSERT_EQUAL_TOL(v1, v2, 1e-10);
        for (int k = 0; k < ndim; k++)
            ASSERT_EQUAL_TOL(g1[k], g2[k], 1e-9);
    }
}

static void testGenericMatchesOpenMM() {
    for (int ndim = 1; ndim <= 3; ndim++)
        for (bool periodic : {false, true})
            compareGenericWithSplineFitter(ndim, periodic);
}

static void testOpenMMPathIsSplineFitter() {
    // 1D: exactly SplineFitter::createSpline + evaluateSpline (what ReferenceContinuous1DFunction calls).
    vector<LatentBiasGrid::Axis> axes = {{-1.0, 2.0, 9, false}};
    vector<double> values = smoothValues(axes, 3);
    LatentBiasGrid grid;
    grid.initialize(axes, values);
    vector<double> x(9), deriv;
    for (int i = 0; i < 9; i++)
        x[i] = -1.0 + i * 3.0 / 8;
    SplineFitter::createSpline(x, values, false, deriv);
    double t = 0.377, g;
    ASSERT_EQUAL(SplineFitter::evaluateSpline(x, values, deriv, t), grid.evaluate(&t, &g));
    ASSERT_EQUAL(SplineFitter::evaluateSplineDerivative(x, values, deriv, t), g);
}

static void testGradientFiniteDifferencesMixed() {
    // periodic x non-periodic, and all mixed 3D combinations
    for (int ndim = 2; ndim <= 3; ndim++) {
        for (int mask = 1; mask < (1 << ndim) - 1; mask++) {
            vector<LatentBiasGrid::Axis> axes;
            int sizes[3] = {8, 7, 6};
            for (int k = 0; k < ndim; k++)
                axes.push_back({-1.0 + 0.1 * k, 1.5 + 0.2 * k, sizes[k], ((mask >> k) & 1) != 0});
            vector<double> values = smoothValues(axes, 20 + mask);
            LatentBiasGrid grid;
            grid.initialize(axes, values);
            ASSERT(!grid.usesOpenMMSplineFitter());
            // interpolates the grid values at grid points
            for (int i = 0; i < sizes[0]; i++) {
                double p[3] = {axes[0].minValue + i * (axes[0].maxValue - axes[0].minValue) / (sizes[0] - 1),
                               axes[1].minValue, ndim > 2 ? axes[2].minValue : 0.0};
                double g[3];
                ASSERT_EQUAL_TOL(values[i], grid.evaluate(p, g), 1e-12);
            }
            const double h = 1e-6;
            for (const auto& p0 : randomPoints(axes, 50, 9 + mask)) {
                vector<double> p = p0;
                for (int k = 0; k < ndim; k++)   // stay inside for the differences
                    p[k] = min(max(p[k], axes[k].minValue + 2 * h), axes[k].maxValue - 2 * h);
                double g[3], gd[3];
                grid.evaluate(p.data(), g);
                for (int k = 0; k < ndim; k++) {
                    vector<double> a = p, b = p;
                    a[k] += h;
                    b[k] -= h;
                    double fd = (grid.evaluate(a.data(), gd) - grid.evaluate(b.data(), gd)) / (2 * h);
                    ASSERT_EQUAL_TOL(fd, g[k], 1e-6);
                }
            }
            // periodic axes: value and gradient continuous across the seam (wrap)
            for (int k = 0; k < ndim; k++) {
                if (!axes[k].periodic)
                    continue;
                double period = axes[k].maxValue - axes[k].minValue;
                vector<double> p = {0.3, 0.2, 0.1};
                double g1[3], g2[3];
                double v1 = grid.evaluate(p.data(), g1);
                p[k] += 2 * period;
                double v2 = grid.evaluate(p.data(), g2);
                ASSERT_EQUAL_TOL(v1, v2, 1e-10);
                for (int j = 0; j < ndim; j++)
                    ASSERT_EQUAL_TOL(g1[j], g2[j], 1e-8);
            }
        }
    }
}

static void testWallsAndClamping() {
    // One non-periodic dimension over component 1 of a 2-component z, kw = 250.
    LatentBiasForce* force = LatentBiasForce::fromModelData(
        [] { std::ifstream in(modelPath("model_nometa.pt"), std::ios::binary); std::stringstream s; s << in.rdbuf(); return s.str(); }());
    force->addGridDimension(1, -0.5, 0.5, 11, false);
    vector<LatentBiasGrid::Axis> axes = {{-0.5, 0.5, 11, false}};
    vector<double> values = smoothValues(axes, 2);
    force->setGridValues(values);
    force->setWallForceConstant(250.0);
    LatentBiasEvaluator evaluator;
    evaluator.initialize(*force);
    LatentBiasGrid grid;
    grid.initialize(axes, values);
    vector<double> params, dVdz;
    double gridE, restraintE, g;
    for (double zval : {-0.9, -0.5, 0.1, 0.5, 0.73}) {
        double z[2] = {123.0, zval};
        evaluator.evaluate(z, 2, params, gridE, restraintE, dVdz);
        double clamped = min(max(zval, -0.5), 0.5);
        double over = max(0.0, zval - 0.5) + max(0.0, -0.5 - zval);
        double expected = grid.evaluate(&clamped, &g) + 0.5 * 250.0 * over * over;
        ASSERT_EQUAL_TOL(expected, gridE, 1e-14);
        ASSERT_EQUAL(0.0, restraintE);
        ASSERT_EQUAL(0.0, dVdz[0]);
        double expectedDeriv = (zval >= -0.5 && zval <= 0.5 ? g : 0.0) + 250.0 * (max(0.0, zval - 0.5) - max(0.0, -0.5 - zval));
        ASSERT_EQUAL_TOL(expectedDeriv, dVdz[1], 1e-12);
    }
    // non-finite z is an error, not a NaN energy
    double bad[2] = {0.0, NAN};
    expectThrow([&] { evaluator.evaluate(bad, 2, params, gridE, restraintE, dVdz); }, "non-finite");
    delete force;
}

static void compareLocalDepositsWithRefit(const vector<LatentBiasGrid::Axis>& axes, bool startFromSpline,
                                          double cutoff = 0.0) {
    // Gaussians added one by one (addSeparable: local update of the node derivatives) must give the interpolant
    // of the summed values (a full refit), including Gaussians that wrap around a periodic axis or sit beyond an
    // edge, on top of non-zero starting values.
    int ndim = axes.size();
    vector<double> values = smoothValues(axes, 21 + ndim);
    LatentBiasGrid local;
    local.initialize(axes, values, !startFromSpline);
    std::mt19937 rng(100 + ndim);
    for (int dep = 0; dep < 12; dep++) {
        vector<vector<double> > factors;
        double height = std::uniform_real_distribution<double>(0.2, 2.5)(rng);
        for (const auto& a : axes) {
            double span = a.maxValue - a.minValue;
            double c = std::uniform_real_distribution<double>(a.minValue - 0.2 * span, a.maxValue + 0.2 * span)(rng);
            double w = std::uniform_real_distribution<double>(0.08, 0.3)(rng) * span;
            // truncated Gaussians narrow enough that their support is a small part of the axis
            factors.push_back(LatentBiasGrid::gaussianFactor(a, c, cutoff > 0 ? 0.3 * w : w, cutoff));
        }
        local.addSeparable(factors, height);
        int n[3] = {1, 1, 1};
        for (int k = 0; k < ndim; k++)
            n[k] = axes[k].size;
        for (int i2 = 0; i2 < n[2]; i2++)
            for (int i1 = 0; i1 < n[1]; i1++)
                for (int i0 = 0; i0 < n[0]; i0++)
                    values[i0 + n[0] * (i1 + n[1] * i2)] += height * factors[0][i0] * (ndim > 1 ? factors[1][i1] : 1.0)
                                                             * (ndim > 2 ? factors[2][i2] : 1.0);
    }
    ASSERT(!local.usesOpenMMSplineFitter());
    LatentBiasGrid refit;
    refit.initialize(axes, values);
    for (const auto& p : randomPoints(axes, 300, 9)) {
        double g1[3], g2[3];
        double v1 = refit.evaluate(p.data(), g1);
        double v2 = local.evaluate(p.data(), g2);
        ASSERT_EQUAL_TOL(v1, v2, 1e-10);
        for (int k = 0; k < ndim; k++)
            ASSERT_EQUAL_TOL(g1[k], g2[k], 1e-9);
    }
}

static void testLocalDepositsEqualRefit() {
    double mins[3] = {-1.0, 0.5, -3.0}, maxs[3] = {2.0, 1.7, 3.0};
    int sizes[3] = {23, 17, 12};
    for (int ndim = 1; ndim <= 3; ndim++)
        for (int mode = 0; mode < 3; mode++) {   // natural, periodic, mixed
            vector<LatentBiasGrid::Axis> axes;
            for (int k = 0; k < ndim; k++)
                axes.push_back({mins[k], maxs[k], sizes[k], mode == 1 || (mode == 2 && k == 0)});
            compareLocalDepositsWithRefit(axes, true);
            compareLocalDepositsWithRefit(axes, false);
            compareLocalDepositsWithRefit(axes, true, 3.5);   // truncated Gaussians (PLUMED-like cutoff)
            compareLocalDepositsWithRefit(axes, false, 1.5);
        }
    // a factor of the wrong length is refused
    vector<LatentBiasGrid::Axis> axes = {{0.0, 1.0, 5, false}};
    LatentBiasGrid grid;
    grid.initialize(axes, vector<double>(5, 0.0));
    bool threw = false;
    try {
        grid.addSeparable({vector<double>(4, 1.0)}, 1.0);
    }
    catch (const OpenMMException&) {
        threw = true;
    }
    ASSERT(threw);
}

static void testTruncatedGaussianFactor() {
    // (exp(-u^2/2) - exp(-c^2/2)) / (1 - exp(-c^2/2)) inside |u| < c, exactly 0 beyond; peak 1; continuous at c
    LatentBiasGrid::Axis axis = {-2.0, 2.0, 401, false};
    double c = 2.5, width = 0.3, center = 0.13;
    vector<double> g = LatentBiasGrid::gaussianFactor(axis, center, width, c);
    vector<double> full = LatentBiasGrid::gaussianFactor(axis, center, width);
    vector<double> x = LatentBiasGrid::axisPoints(axis);
    double atCutoff = exp(-0.5 * c * c);
    for (int i = 0; i < axis.size; i++) {
        double u = (x[i] - center) / width;
        if (fabs(u) >= c) {
            ASSERT_EQUAL(0.0, g[i]);
        }
        else {
            ASSERT_EQUAL_TOL((full[i] - atCutoff) / (1.0 - atCutoff), g[i], 1e-14);
            ASSERT(g[i] > 0 && g[i] <= 1.0);
            ASSERT(fabs(g[i] - full[i]) <= atCutoff + 1e-15);   // the truncation error bound per axis
        }
    }
    // periodic: minimum image, last point repeats the first
    LatentBiasGrid::Axis ring = {-M_PI, M_PI, 61, true};
    vector<double> p = LatentBiasGrid::gaussianFactor(ring, 3.0, 0.2, 3.0);
    ASSERT_EQUAL(p[0], p[60]);
    ASSERT(p[0] > 0);
    ASSERT_EQUAL(0.0, p[30]);
}

int main(int argc, char* argv[]) {
    return runTests(argc, argv, {
        {"generic construction == SplineFitter (1-3D, natural/periodic)", testGenericMatchesOpenMM},
        {"OpenMM path is SplineFitter", testOpenMMPathIsSplineFitter},
        {"mixed periodicity: interpolation, gradients, seams", testGradientFiniteDifferencesMixed},
        {"walls and clamping", testWallsAndClamping},
        {"local Gaussian deposits == full refit (1-3D, natural/periodic/mixed; untruncated and truncated)",
         testLocalDepositsEqualRefit},
        {"truncated Gaussian factor", testTruncatedGaussianFactor},
    });
}
