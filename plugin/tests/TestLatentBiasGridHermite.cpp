/*
 * Hermite tables with exact node derivatives (LatentBiasForce::setGridInterpolation("hermite"), issue 10 item 6):
 * the table of a deposit equals the analytic kernel and its derivatives at every node (central differences of the
 * kernel's definition), 1-3 D, periodic, non-periodic, mixed, metadynamics Gaussians and OPES kernels, truncated and
 * not; V = a ln(max(S, 0)/N + eps) and its node derivatives from S's (the OPES transform on a Hermite table) against
 * central differences of V; the Hermite patch of a Gaussian obeys the cubic Hermite error bound h^4/384 max|f''''|; a Context updated by
 * local deposits equals a new Context bit for bit, and the Force's table the Context's replay bit for bit; forces vs
 * central finite differences (with and without the OPES log transform); setGridValues(values) in "hermite" mode is the
 * spline's interpolant; invalid input; serialization (version 4, checksum, an edited version refused).
 */
#include "TestUtilities.h"
#include "internal/LatentBiasGrid.h"
#include "openmm/serialization/XmlSerializer.h"

using namespace LatentBiasPlugin;
using namespace LatentBiasTest;
using namespace std;

namespace {

typedef vector<LatentBiasGrid::Axis> Axes;

vector<Axes> gridCases() {
    return {
        {{-1.0, 2.0, 41, false}},
        {{-3.0, 3.0, 37, true}},
        {{-1.0, 1.0, 23, false}, {0.0, 2.0, 19, false}},
        {{-M_PI, M_PI, 25, true}, {-M_PI, M_PI, 21, true}},
        {{-1.0, 1.0, 15, false}, {0.0, 2.0, 13, false}, {-0.5, 0.5, 11, false}},
        {{-1.0, 1.0, 15, true}, {0.0, 2.0, 13, false}, {-0.5, 0.5, 11, true}},
    };
}

struct TestKernel {
    bool density;   // OPES kernel (spherical cut, shifted, normalised) or metadynamics Gaussian (per-axis cut, stretched)
    vector<double> center, width;
    double height, cutoff;
};

vector<TestKernel> randomKernels(const Axes& axes, int count, int seed) {
    std::mt19937 rng(seed);
    vector<TestKernel> kernels;
    for (int i = 0; i < count; i++) {
        TestKernel k;
        k.density = i % 2 == 1;
        for (const auto& a : axes) {
            double L = a.maxValue - a.minValue;
            std::uniform_real_distribution<double> c(a.minValue - (a.periodic ? 0.0 : 0.1 * L), a.maxValue);
            std::uniform_real_distribution<double> w(0.05 * L, 0.12 * L);
            k.center.push_back(c(rng));
            k.width.push_back(w(rng));
        }
        std::uniform_real_distribution<double> h(0.2, 3.0);
        k.height = (i % 5 == 4 ? -0.5 : 1.0) * h(rng);
        k.cutoff = i % 3 == 2 ? 0.0 : (k.density ? 2.5 : sqrt(12.5));
        kernels.push_back(k);
    }
    return kernels;
}

/** The kernel's definition at any point t (minimum image along periodic axes); `near` is set when t is within `margin`
 *  (in widths) of the cut or of the antipode of a periodic axis, where the kernel is not smooth. */
double kernelValue(const Axes& axes, const TestKernel& k, const double* t, double margin, bool& near) {
    double r2 = 0.0, norm = 1.0, product = 1.0;
    double atCut = k.cutoff > 0 ? exp(-0.5 * k.cutoff * k.cutoff) : 0.0;
    for (size_t d = 0; d < axes.size(); d++) {
        double delta = t[d] - k.center[d];
        double L = axes[d].maxValue - axes[d].minValue;
        if (axes[d].periodic) {
            delta -= L * std::nearbyint(delta / L);
            if (fabs(fabs(delta) - 0.5 * L) < margin * k.width[d])
                near = true;
        }
        double u = delta / k.width[d];
        r2 += u * u;
        norm *= sqrt(2 * M_PI) * k.width[d];
        if (!k.density) {
            if (k.cutoff > 0 && fabs(fabs(u) - k.cutoff) < margin)
                near = true;
            product *= k.cutoff > 0 ? (fabs(u) < k.cutoff ? (exp(-0.5 * u * u) - atCut) / (1 - atCut) : 0.0)
                                    : exp(-0.5 * u * u);
        }
    }
    if (!k.density)
        return k.height * product;
    if (k.cutoff > 0 && fabs(sqrt(r2) - k.cutoff) < margin)
        near = true;
    if (k.cutoff <= 0)
        return k.height * exp(-0.5 * r2) / norm;
    return r2 < k.cutoff * k.cutoff ? k.height * (exp(-0.5 * r2) - atCut) / norm : 0.0;
}

/** d^mask of the kernel at t by nested central differences of its definition (step h along each axis); with
 *  logParams {prefactor, epsilon, norm} of prefactor ln(max(kernel, 0)/norm + epsilon) instead. */
double kernelDerivativeFD(const Axes& axes, const TestKernel& k, const double* t, int mask, bool& near,
                          const double* logParams = nullptr, double margin = 3e-3) {
    int bits = 0;
    for (size_t d = 0; d < axes.size(); d++)
        bits += (mask >> d) & 1;
    const double h = bits < 3 ? 1e-4 : 1e-3;   // in widths: rounding ~ 1e-16 / (2h)^bits, truncation ~ h^2
    double sum = 0.0;
    for (int corner = 0; corner < (1 << axes.size()); corner++) {
        if ((corner & ~mask) != 0)
            continue;
        double p[3], sign = 1.0;
        for (size_t d = 0; d < axes.size(); d++) {
            p[d] = t[d];
            if ((mask >> d) & 1) {
                bool plus = (corner >> d) & 1;
                p[d] += plus ? h * k.width[d] : -h * k.width[d];
                if (!plus)
                    sign = -sign;
            }
        }
        double value = kernelValue(axes, k, p, margin, near);
        if (logParams != nullptr)
            value = logParams[0] * log(max(value, 0.0) / logParams[2] + logParams[1]);
        sum += sign * value;
    }
    double scale = 1.0;
    for (size_t d = 0; d < axes.size(); d++)
        if ((mask >> d) & 1)
            scale *= 2 * h * k.width[d];
    return sum / scale;
}

void addToTable(const Axes& axes, const TestKernel& k, vector<vector<double> >& table) {
    vector<double*> arrays;
    for (auto& a : table)
        arrays.push_back(a.data());
    if (k.density)
        LatentBiasGrid::addDensityKernelToTable(axes, {k.center, k.width, k.height, k.cutoff}, arrays.data());
    else
        LatentBiasGrid::addGaussianToTable(axes, k.center, k.width, k.height, k.cutoff, arrays.data());
}

size_t gridSize(const Axes& axes) {
    size_t total = 1;
    for (const auto& a : axes)
        total *= a.size;
    return total;
}

} // namespace

/** Every node of a one-kernel table holds the kernel's value and derivatives (central differences of its definition). */
static void testTableEqualsAnalyticKernel() {
    int seed = 3;
    for (const Axes& axes : gridCases()) {
        int ndim = axes.size(), nmask = 1 << ndim;
        size_t total = gridSize(axes);
        int n[3] = {1, 1, 1};
        for (int d = 0; d < ndim; d++)
            n[d] = axes[d].size;
        vector<vector<double> > x;
        for (const auto& a : axes)
            x.push_back(LatentBiasGrid::axisPoints(a));
        int checked = 0;
        for (const TestKernel& k : randomKernels(axes, 6, seed++)) {
            vector<vector<double> > table(nmask, vector<double>(total, 0.0));
            addToTable(axes, k, table);
            double peak = fabs(k.height);
            if (k.density)
                for (int d = 0; d < ndim; d++)
                    peak /= sqrt(2 * M_PI) * k.width[d];
            for (size_t node = 0; node < total; node++) {
                int idx[3] = {(int) (node % n[0]), (int) (node / n[0] % n[1]), (int) (node / ((size_t) n[0] * n[1]))};
                double t[3];
                for (int d = 0; d < ndim; d++)
                    t[d] = x[d][idx[d]];
                bool near = false;
                double value = kernelValue(axes, k, t, 1e-3, near);
                ASSERT_EQUAL_TOL(value, table[0][node], 1e-14 * peak + 1e-300);
                for (int mask = 1; mask < nmask; mask++) {
                    bool nearFD = near;
                    double fd = kernelDerivativeFD(axes, k, t, mask, nearFD);
                    if (nearFD)
                        continue;   // the stencil crosses the cut or a periodic antipode: not smooth there
                    double scale = peak;
                    for (int d = 0; d < ndim; d++)
                        if ((mask >> d) & 1)
                            scale /= k.width[d];
                    int bits = 0;
                    for (int d = 0; d < ndim; d++)
                        bits += (mask >> d) & 1;
                    if (fabs(fd - table[mask][node]) > (bits < 3 ? 1e-6 : 1e-5) * scale) {
                        stringstream msg;
                        msg << "node derivative (mask " << mask << ") " << table[mask][node] << " vs central "
                            << "differences " << fd << " at node " << node << " (" << ndim << "-D, kernel "
                            << (k.density ? "OPES" : "metad") << ", cutoff " << k.cutoff << ")";
                        throw OpenMMException(msg.str());
                    }
                    checked++;
                }
            }
        }
        ASSERT(checked > 0);
    }
}

/** logNodeDerivatives: V = a ln(max(S, 0)/N + eps) and its node derivatives from S's, against central differences of
 *  V of the kernel's definition at every node (OPES kernels; where V is smooth). */
static void testLogNodeDerivatives() {
    int seed = 20;
    for (const Axes& axes : gridCases()) {
        int ndim = axes.size(), nmask = 1 << ndim;
        size_t total = gridSize(axes);
        int n[3] = {1, 1, 1};
        for (int d = 0; d < ndim; d++)
            n[d] = axes[d].size;
        vector<vector<double> > x;
        for (const auto& a : axes)
            x.push_back(LatentBiasGrid::axisPoints(a));
        int checked = 0;
        for (TestKernel k : randomKernels(axes, 6, seed++)) {
            k.density = true;
            k.height = fabs(k.height);
            vector<vector<double> > table(nmask, vector<double>(total, 0.0));
            addToTable(axes, k, table);
            double peak = k.height;
            for (int d = 0; d < ndim; d++)
                peak /= sqrt(2 * M_PI) * k.width[d];
            const double logParams[3] = {2.3, 1e-3, 0.4 * peak};
            for (size_t node = 0; node < total; node++) {
                int idx[3] = {(int) (node % n[0]), (int) (node / n[0] % n[1]), (int) (node / ((size_t) n[0] * n[1]))};
                double t[3], f[8];
                for (int d = 0; d < ndim; d++)
                    t[d] = x[d][idx[d]];
                for (int mask = 0; mask < nmask; mask++)
                    f[mask] = table[mask][node];
                LatentBiasGrid::logNodeDerivatives(ndim, f, logParams[0], logParams[1], logParams[2]);
                bool near = false;
                double value = kernelValue(axes, k, t, 3e-3, near);
                ASSERT_EQUAL_TOL(logParams[0] * log(max(value, 0.0) / logParams[2] + logParams[1]), f[0], 1e-12);
                for (int mask = 1; mask < nmask; mask++) {
                    bool nearFD = near;
                    // near the cut V changes on the scale S/S', much shorter than the width there (S -> 0): central
                    // differences of step 1e-4 width lose digits within ~0.05 widths of it, which are skipped
                    double fd = kernelDerivativeFD(axes, k, t, mask, nearFD, logParams, 0.05);
                    if (nearFD)
                        continue;
                    double scale = logParams[0];
                    int bits = 0;
                    for (int d = 0; d < ndim; d++)
                        if ((mask >> d) & 1) {
                            scale /= k.width[d];
                            bits++;
                        }
                    double tol = bits < 3 ? 1e-5 : 1e-3;   // third order: step 1e-3 width, truncation ~ h^2
                    if (fabs(fd - f[mask]) > tol * (scale + fabs(fd))) {
                        stringstream msg;
                        msg << "log node derivative (mask " << mask << ") " << f[mask] << " vs central differences "
                            << fd << " at node " << node << " (" << ndim << "-D)";
                        throw OpenMMException(msg.str());
                    }
                    checked++;
                }
            }
        }
        ASSERT(checked > 0);
    }
}

/** The cubic Hermite patch with exact derivatives: |p - f| <= h^4/384 max|f''''| (= 3/sigma^4 for a unit Gaussian). */
static void testHermiteErrorBound() {
    Axes axes = {{-2.0, 2.0, 41, false}};
    double h = 0.1;
    for (double sigma : {0.1, 0.15, 0.3}) {
        LatentBiasGrid grid;
        grid.initializeHermite(axes, vector<double>(41, 0.0), vector<double>());
        grid.addExactGaussian({0.013}, {sigma}, 1.0, 0.0);
        double bound = pow(h, 4) / 384.0 * 3.0 / pow(sigma, 4), worst = 0.0;
        for (int i = 0; i <= 4000; i++) {
            double t = -2.0 + 4.0 * i / 4000.0, g;
            double u = (t - 0.013) / sigma;
            worst = max(worst, fabs(grid.evaluate(&t, &g) - exp(-0.5 * u * u)));
        }
        if (!(worst <= bound * (1 + 1e-9)))
            throw OpenMMException("Hermite interpolation error " + to_string(worst) + " exceeds its bound " +
                                  to_string(bound));
    }
}

/** A Context updated by local deposits equals a new Context bit for bit; the Force's table equals the replay. */
static void testLocalEqualsRebuild(const string& platform) {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    for (int ndim = 1; ndim <= 3; ndim++) {
        for (bool logTransform : {false, true}) {
            System system;
            for (int i = 0; i < 5; i++)
                system.addParticle(1.0);
            LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
            Axes axes;
            int sizes[3] = {31, 23, 19};
            for (int k = 0; k < ndim; k++) {
                double lo = z[k] - 0.6, hi = z[k] + 0.7;
                bool periodic = (k == 1);
                force->addGridDimension(k, lo, hi, sizes[k], periodic);
                axes.push_back({lo, hi, sizes[k], periodic});
            }
            force->setGridInterpolation("hermite");
            ASSERT_EQUAL(string("hermite"), force->getGridInterpolation());
            if (logTransform)
                force->setGridLogTransform("opesZ", 0.7, 2.3, 1e-4);
            vector<TestKernel> kernels;
            for (int i = 0; i < 6; i++) {
                TestKernel k;
                k.density = logTransform || i % 2 == 1;
                for (int d = 0; d < ndim; d++) {
                    k.center.push_back(z[d] + 0.07 * (i - 2.5) * (d + 1));
                    k.width.push_back(0.09 + 0.02 * d);
                }
                k.height = (i == 5 && logTransform) ? -0.3 : 1.0 + 0.5 * i;
                k.cutoff = i == 3 ? 0.0 : (k.density ? 3.0 : sqrt(12.5));
                kernels.push_back(k);
            }
            auto deposit = [&](const TestKernel& k) {
                if (k.density)
                    force->addGridKernel(k.center, k.width, k.height, k.cutoff);
                else
                    force->addGridGaussian(k.center, k.width, k.height, k.cutoff);
            };
            deposit(kernels[0]);
            force->setForceGroup(1);
            system.addForce(force);
            VerletIntegrator integrator(0.001);
            Context context(system, integrator, Platform::getPlatformByName(platform));
            context.setPositions(pos);
            energy(context, 2);
            for (size_t i = 1; i < kernels.size(); i++)
                deposit(kernels[i]);
            force->updateParametersInContext(context);
            double live = energy(context, 2);
            vector<Vec3> liveForces = forces(context, 2);
            checkFiniteDifferences(context, pos, 2, 1e-5, 1e-5);
            VerletIntegrator integrator2(0.001);
            Context fresh(system, integrator2, Platform::getPlatformByName(platform));
            fresh.setPositions(pos);
            ASSERT_EQUAL(energy(fresh, 2), live);   // the same table, bit for bit
            vector<Vec3> freshForces = forces(fresh, 2);
            for (size_t i = 0; i < pos.size(); i++)
                for (int j = 0; j < 3; j++)
                    ASSERT_EQUAL(freshForces[i][j], liveForces[i][j]);
            // the Force's table equals the same deposits replayed on a Hermite grid, bit for bit, and the energy is
            // that grid's interpolant at z
            LatentBiasGrid replay;
            replay.initializeHermite(axes, vector<double>(gridSize(axes), 0.0), vector<double>());
            for (const TestKernel& k : kernels) {
                if (k.density)
                    replay.addExactDensityKernel({k.center, k.width, k.height, k.cutoff});
                else
                    replay.addExactGaussian(k.center, k.width, k.height, k.cutoff);
            }
            ASSERT(replay.getValues() == force->getGridValues());
            vector<double> flat;
            for (size_t m = 1; m < replay.getNodeDerivatives().size(); m++)
                flat.insert(flat.end(), replay.getNodeDerivatives()[m].begin(), replay.getNodeDerivatives()[m].end());
            ASSERT(flat == force->getGridNodeDerivatives());
            double t[3], g[3];
            for (int k = 0; k < ndim; k++)
                t[k] = z[k];
            // with the log transform: the Hermite patch of V from V's node values and derivatives
            double expected = logTransform ? replay.evaluateLogHermite(t, g, 2.3, 1e-4, 0.7) : replay.evaluate(t, g);
            ASSERT_EQUAL_TOL(expected, live, 1e-12);
            // the interpolation cannot change in an existing Context
            force->setGridInterpolation("spline");
            expectThrow([&] { force->updateParametersInContext(context); }, "interpolation");
        }
    }
}

/** setGridValues(values) in "hermite" mode: the spline's node derivatives, i.e. the "spline" interpolant. */
static void testSplineDerivativesFromValues() {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    for (int ndim = 1; ndim <= 3; ndim++) {
        double energies[2];
        for (int hermite = 0; hermite < 2; hermite++) {
            System system;
            for (int i = 0; i < 5; i++)
                system.addParticle(1.0);
            LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
            Axes axes;
            for (int k = 0; k < ndim; k++) {
                force->addGridDimension(k, z[k] - 0.5, z[k] + 0.55, 17, false);
                axes.push_back({z[k] - 0.5, z[k] + 0.55, 17, false});
            }
            vector<double> values(gridSize(axes));
            for (size_t i = 0; i < values.size(); i++)
                values[i] = sin(0.37 * i) + 0.01 * i;
            force->setGridValues(values);
            if (hermite)
                force->setGridInterpolation("hermite");
            ASSERT_EQUAL((size_t) (hermite ? ((1 << ndim) - 1) * values.size() : 0),
                         force->getGridNodeDerivatives().size());
            system.addForce(force);
            VerletIntegrator integrator(0.001);
            Context context(system, integrator, Platform::getPlatformByName("Reference"));
            context.setPositions(pos);
            energies[hermite] = energy(context);
        }
        ASSERT_EQUAL_TOL(energies[0], energies[1], 1e-10);
    }
}

static void testErrors() {
    LatentBiasForce force(modelPath("model_d3.pt"));
    force.addGridDimension(0, -1.0, 1.0, 11, true);
    expectThrow([&] { force.setGridInterpolation("cubic"); }, "not an interpolation");
    expectThrow([&] { force.setGridValues(vector<double>(11, 0.0), vector<double>(11, 0.0)); }, "hermite");
    force.setGridInterpolation("hermite");
    expectThrow([&] { force.setGridValues(vector<double>(11, 0.0), vector<double>(12, 0.0)); }, "node derivatives");
    vector<double> d(11, 0.0);
    d[0] = 1.0;   // the last point of a periodic axis must repeat the first
    expectThrow([&] { force.setGridValues(vector<double>(11, 0.0), d); }, "periodic");
    d[10] = 1.0;
    force.setGridValues(vector<double>(11, 0.0), d);
    d[3] = NAN;
    expectThrow([&] { force.setGridValues(vector<double>(11, 0.0), d); }, "not finite");
}

static void testSerialization() {
    LatentBiasForce force(modelPath("model_d3.pt"));
    force.addGridDimension(0, -1.0, 1.0, 11);
    force.addGridDimension(1, -1.0, 1.0, 9, true);
    force.setGridInterpolation("hermite");
    force.addGridKernel({0.1, 0.2}, {0.2, 0.3}, 1.5, 3.0);
    force.addGridGaussian({-0.3, 0.9}, {0.25, 0.2}, 0.7, sqrt(12.5));
    force.setGridLogTransform("opesZ", 0.25, 2.5, 1e-5);
    stringstream buffer;
    XmlSerializer::serialize<LatentBiasForce>(&force, "Force", buffer);
    string xml = buffer.str();
    ASSERT(xml.find("version=\"4\"") != string::npos);
    LatentBiasForce* copy = XmlSerializer::deserialize<LatentBiasForce>(buffer);
    ASSERT_EQUAL(string("hermite"), copy->getGridInterpolation());
    ASSERT(copy->getGridValues() == force.getGridValues());
    ASSERT(copy->getGridNodeDerivatives() == force.getGridNodeDerivatives());
    ASSERT(copy->usesGridLogTransform());
    delete copy;
    // a spline force stays at its old version
    LatentBiasForce plain(modelPath("model_d3.pt"));
    plain.addGridDimension(0, -1.0, 1.0, 11);
    plain.addGridGaussian({0.1}, {0.2}, 1.0);
    stringstream plainBuffer;
    XmlSerializer::serialize<LatentBiasForce>(&plain, "Force", plainBuffer);
    ASSERT(plainBuffer.str().find("version=\"2\"") != string::npos);
    auto replaced = [&](const string& from, const string& to) {
        string text = xml;
        size_t at = text.find(from);
        ASSERT(at != string::npos);
        text.replace(at, from.size(), to);
        return text;
    };
    size_t at = xml.find("<NodeDerivatives");
    ASSERT(at != string::npos);
    size_t valuesAt = xml.find("values=\"", at) + 8;
    string edited = xml;
    edited.insert(valuesAt, "1");   // a changed first derivative
    expectThrow([&] { stringstream in(edited); delete XmlSerializer::deserialize<LatentBiasForce>(in); }, "checksum");
    string downgraded = replaced("version=\"4\"", "version=\"3\"");
    expectThrow([&] { stringstream in(downgraded); delete XmlSerializer::deserialize<LatentBiasForce>(in); },
                "version was edited");
}

int main(int argc, char* argv[]) {
    initPlatforms();
    vector<pair<string, function<void()>>> tests;
    tests.push_back({"exact table equals the analytic kernel and its derivatives", testTableEqualsAnalyticKernel});
    tests.push_back({"Hermite error bound", testHermiteErrorBound});
    tests.push_back({"log transform of the node derivatives", testLogNodeDerivatives});
    tests.push_back({"setGridValues(values) in hermite mode is the spline", testSplineDerivativesFromValues});
    tests.push_back({"invalid input", testErrors});
    tests.push_back({"serialization", testSerialization});
    for (const string& p : platformNames())
        tests.push_back({p + ": local deposits equal a new Context", [p] { testLocalEqualsRebuild(p); }});
    return runTests(argc, argv, tests);
}
