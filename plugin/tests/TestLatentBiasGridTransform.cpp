/*
 * The OPES transform of the grid and OPES kernel deposits (issue 10 item 6): truncated, shifted kernels on the grid
 * (densityKernelBlock) against their formula; local kernel updates of the interpolant against a full refit of the
 * summed values (1-3 D, periodic, non-periodic, mixed; negative weights as compression removes kernels; untruncated
 * kernels); the force's energy prefactor*ln(max(P,0)/N + epsilon) against the spline of P at the model's z, its
 * forces against central finite differences, the normalization as a Context parameter, deposits in a live Context
 * against a new Context; serialization (version 3, checksums, an edited version refused).
 */
#include "TestUtilities.h"
#include "internal/LatentBiasGrid.h"
#include "openmm/serialization/XmlSerializer.h"

using namespace LatentBiasPlugin;
using namespace LatentBiasTest;
using namespace std;

namespace {

struct Case {
    vector<LatentBiasGrid::Axis> axes;
};

vector<LatentBiasGrid::DensityKernel> randomKernels(const vector<LatentBiasGrid::Axis>& axes, int count, int seed,
                                                    double cutoff) {
    std::mt19937 rng(seed);
    vector<LatentBiasGrid::DensityKernel> kernels;
    for (int i = 0; i < count; i++) {
        LatentBiasGrid::DensityKernel k;
        for (const auto& a : axes) {
            double L = a.maxValue - a.minValue;
            std::uniform_real_distribution<double> c(a.minValue - (a.periodic ? 0.0 : 0.1 * L), a.maxValue);
            std::uniform_real_distribution<double> w(0.06 * L, 0.15 * L);
            k.center.push_back(c(rng));
            k.width.push_back(w(rng));
        }
        std::uniform_real_distribution<double> weight(0.2, 3.0);
        k.weight = (i % 4 == 3 ? -0.5 : 1.0) * weight(rng);   // some removals, as a compression does
        k.cutoff = cutoff;
        kernels.push_back(k);
    }
    return kernels;
}

/** The kernel at node (i0, i1, i2) from its definition. */
double kernelAt(const vector<LatentBiasGrid::Axis>& axes, const LatentBiasGrid::DensityKernel& k, const int* node) {
    double r2 = 0.0, norm = 1.0;
    for (size_t d = 0; d < axes.size(); d++) {
        vector<double> x = LatentBiasGrid::axisPoints(axes[d]);
        int i = node[d];
        if (axes[d].periodic && i == axes[d].size - 1)
            i = 0;
        double delta = x[i] - k.center[d];
        double L = axes[d].maxValue - axes[d].minValue;
        if (axes[d].periodic)
            delta -= L * std::nearbyint(delta / L);
        r2 += (delta / k.width[d]) * (delta / k.width[d]);
        norm *= sqrt(2 * M_PI) * k.width[d];
    }
    if (k.cutoff <= 0)
        return k.weight * exp(-0.5 * r2) / norm;
    return r2 < k.cutoff * k.cutoff ? k.weight * (exp(-0.5 * r2) - exp(-0.5 * k.cutoff * k.cutoff)) / norm : 0.0;
}

vector<double> summedValues(const vector<LatentBiasGrid::Axis>& axes, const vector<LatentBiasGrid::DensityKernel>& ks) {
    int n[3] = {1, 1, 1};
    for (size_t k = 0; k < axes.size(); k++)
        n[k] = axes[k].size;
    vector<double> values((size_t) n[0] * n[1] * n[2], 0.0);
    for (const auto& kernel : ks)
        for (int i2 = 0; i2 < n[2]; i2++)
            for (int i1 = 0; i1 < n[1]; i1++)
                for (int i0 = 0; i0 < n[0]; i0++) {
                    int node[3] = {i0, i1, i2};
                    values[i0 + n[0] * (i1 + n[1] * i2)] += kernelAt(axes, kernel, node);
                }
    return values;
}

vector<vector<LatentBiasGrid::Axis> > gridCases() {
    return {
        {{-1.0, 2.0, 41, false}},
        {{-3.0, 3.0, 37, true}},
        {{-1.0, 1.0, 23, false}, {0.0, 2.0, 19, false}},
        {{-M_PI, M_PI, 25, true}, {-M_PI, M_PI, 21, true}},
        {{-M_PI, M_PI, 25, true}, {0.0, 1.5, 17, false}},
        {{-1.0, 1.0, 15, false}, {0.0, 2.0, 13, false}, {-0.5, 0.5, 11, false}},
        {{-1.0, 1.0, 15, true}, {0.0, 2.0, 13, true}, {-0.5, 0.5, 11, true}},
        {{-1.0, 1.0, 15, true}, {0.0, 2.0, 13, false}, {-0.5, 0.5, 11, true}},
    };
}

} // namespace

/** densityKernelBlock: every node of the grid gets exactly the kernel's definition (0 outside the block). */
static void testKernelBlock() {
    for (const auto& axes : gridCases()) {
        for (const auto& kernel : randomKernels(axes, 6, 11, 2.5)) {
            vector<vector<int> > idx;
            vector<double> block;
            LatentBiasGrid::densityKernelBlock(axes, kernel, idx, block);
            vector<double> expected = summedValues(axes, {kernel});
            vector<double> got(expected.size(), 0.0);
            int n[3] = {1, 1, 1};
            size_t s[3] = {1, 1, 1};
            for (size_t k = 0; k < axes.size(); k++) {
                n[k] = axes[k].size;
                s[k] = idx[k].size();
            }
            if (!block.empty())
                for (size_t i2 = 0; i2 < s[2]; i2++)
                    for (size_t i1 = 0; i1 < s[1]; i1++)
                        for (size_t i0 = 0; i0 < s[0]; i0++) {
                            size_t node = idx[0][i0];
                            if (axes.size() > 1)
                                node += (size_t) n[0] * idx[1][i1];
                            if (axes.size() > 2)
                                node += (size_t) n[0] * n[1] * idx[2][i2];
                            got[node] += block[i0 + s[0] * (i1 + s[1] * i2)];
                        }
            for (size_t i = 0; i < expected.size(); i++)
                ASSERT_EQUAL_TOL(expected[i], got[i], 1e-13);
        }
    }
}

/** Local kernel updates of the interpolant equal a full refit of the summed table (values and gradients). */
static void testLocalKernelsEqualRefit() {
    int seed = 1;
    for (const auto& axes : gridCases()) {
        for (double cutoff : {2.5, 0.0}) {
            for (bool fromSpline : {true, false}) {
                auto kernels = randomKernels(axes, 7, seed++, cutoff);
                vector<double> start = summedValues(axes, randomKernels(axes, 2, seed++, 0.0));
                LatentBiasGrid local;
                local.initialize(axes, start, !fromSpline);
                // in two batches, as the evaluator replays deposits
                vector<LatentBiasGrid::DensityKernel> first(kernels.begin(), kernels.begin() + 3);
                vector<LatentBiasGrid::DensityKernel> second(kernels.begin() + 3, kernels.end());
                local.addDensityKernels(first);
                local.addDensityKernels(second);
                vector<double> total = summedValues(axes, kernels);
                for (size_t i = 0; i < total.size(); i++)
                    total[i] += start[i];
                LatentBiasGrid refit;
                refit.initialize(axes, total);
                double peak = 0.0;
                for (double v : total)
                    peak = max(peak, fabs(v));
                for (size_t i = 0; i < total.size(); i++)
                    ASSERT_EQUAL_TOL(total[i], local.getValues()[i], 1e-12 * peak);
                std::mt19937 rng(seed);
                for (int p = 0; p < 200; p++) {
                    double t[3], ga[3], gb[3];
                    for (size_t k = 0; k < axes.size(); k++) {
                        std::uniform_real_distribution<double> u(axes[k].minValue, axes[k].maxValue);
                        t[k] = u(rng);
                    }
                    double a = local.evaluate(t, ga), b = refit.evaluate(t, gb);
                    if (fabs(a - b) > 1e-11 * peak)
                        throw OpenMMException("local kernel update differs from the refit: " + to_string(a) + " vs " +
                                              to_string(b));
                    for (size_t k = 0; k < axes.size(); k++) {
                        double h = axes[k].maxValue - axes[k].minValue;
                        if (fabs(ga[k] - gb[k]) > 1e-10 * peak / h)
                            throw OpenMMException("local kernel update: the gradient differs from the refit");
                    }
                }
            }
        }
    }
}

/** Force on model_d3.pt with the log transform: energies, finite differences, the normalization parameter, deposits. */
static void testLogTransformForce(const string& platform) {
    vector<Vec3> pos = testPositions();
    vector<double> z = computeZ(modelPath("model_d3.pt"), pos);
    for (int ndim = 1; ndim <= 3; ndim++) {
        System system;
        for (int i = 0; i < 5; i++)
            system.addParticle(1.0);
        LatentBiasForce* force = new LatentBiasForce(modelPath("model_d3.pt"));
        vector<LatentBiasGrid::Axis> axes;
        int sizes[3] = {31, 23, 19};
        for (int k = 0; k < ndim; k++) {
            double lo = z[k] - 0.6, hi = z[k] + 0.7;
            bool periodic = (k == 1);
            force->addGridDimension(k, lo, hi, sizes[k], periodic);
            axes.push_back({lo, hi, sizes[k], periodic});
        }
        const double prefactor = 2.3, epsilon = 1e-4, normalization = 0.7;
        force->setGridScaleParameter("scale", 1.0);
        force->setGridLogTransform("opesZ", normalization, prefactor, epsilon);
        ASSERT(force->usesGridLogTransform());
        // kernels near z (the force is then not flat there) and one far away
        vector<LatentBiasGrid::DensityKernel> kernels;
        for (int i = 0; i < 4; i++) {
            LatentBiasGrid::DensityKernel k;
            for (int d = 0; d < ndim; d++) {
                k.center.push_back(z[d] + 0.08 * (i - 1.5) * (d + 1));
                k.width.push_back(0.15);
            }
            k.weight = 1.0 + i;
            k.cutoff = 3.0;
            kernels.push_back(k);
        }
        force->setGridValues(summedValues(axes, {kernels[0]}));
        force->setForceGroup(1);
        system.addForce(force);
        VerletIntegrator integrator(0.001);
        Context context(system, integrator, Platform::getPlatformByName(platform));
        context.setPositions(pos);
        auto expected = [&](const vector<LatentBiasGrid::DensityKernel>& ks, double norm, double scale) {
            LatentBiasGrid grid;
            grid.initialize(axes, summedValues(axes, ks));
            double t[3], g[3];
            for (int k = 0; k < ndim; k++)
                t[k] = z[k];
            double p = grid.evaluate(t, g);
            return scale * prefactor * log(max(p, 0.0) / norm + epsilon);
        };
        ASSERT_EQUAL_TOL(expected({kernels[0]}, normalization, 1.0), energy(context, 2), 1e-10);
        checkFiniteDifferences(context, pos, 2, 1e-5, 1e-5);
        // deposits in the live Context (local update) equal a fresh Context
        for (int i = 1; i < 4; i++)
            force->addGridKernel(kernels[i].center, kernels[i].width, kernels[i].weight, kernels[i].cutoff);
        force->addGridKernel(kernels[0].center, kernels[0].width, -0.5 * kernels[0].weight, kernels[0].cutoff);
        force->updateParametersInContext(context);
        vector<LatentBiasGrid::DensityKernel> all = kernels;
        all.push_back(kernels[0]);
        all.back().weight *= -0.5;
        context.setParameter("opesZ", 1.9);
        context.setParameter("scale", 0.8);
        double live = energy(context, 2);
        ASSERT_EQUAL_TOL(expected(all, 1.9, 0.8), live, 1e-9);
        checkFiniteDifferences(context, pos, 2, 1e-5, 1e-5);
        vector<Vec3> liveForces = forces(context, 2);
        VerletIntegrator integrator2(0.001);
        Context fresh(system, integrator2, Platform::getPlatformByName(platform));
        fresh.setPositions(pos);
        fresh.setParameter("opesZ", 1.9);
        fresh.setParameter("scale", 0.8);
        ASSERT_EQUAL_TOL(energy(fresh, 2), live, 1e-10);
        vector<Vec3> freshForces = forces(fresh, 2);
        for (size_t i = 0; i < pos.size(); i++)
            ASSERT_EQUAL_VEC(freshForces[i], liveForces[i], 1e-8);
        // P <= 0 at z (all kernels far away): flat at prefactor*ln(epsilon), no force
        force->setGridValues(vector<double>(force->getGridValues().size(), 0.0));
        force->updateParametersInContext(context);
        ASSERT_EQUAL_TOL(0.8 * prefactor * log(epsilon), energy(context, 2), 1e-12);
        for (const Vec3& f : forces(context, 2))
            ASSERT_EQUAL_VEC(Vec3(0, 0, 0), f, 1e-14);
        // a bad normalization is refused, naming the parameter
        context.setParameter("opesZ", 0.0);
        expectThrow([&] { energy(context, 2); }, "opesZ");
        context.setParameter("opesZ", 1.0);
        // the transform cannot be switched off in an existing Context
        force->setGridLogTransform("", 1.0, 1.0, 1.0);
        expectThrow([&] { force->updateParametersInContext(context); }, "log transform");
    }
}

static void testLogTransformErrors() {
    LatentBiasForce force(modelPath("model_d3.pt"));
    force.addGridDimension(0, -1.0, 1.0, 11);
    force.setGridScaleParameter("s", 1.0);
    expectThrow([&] { force.setGridLogTransform("z", 1.0, 0.0, 1e-3); }, "must be finite and > 0");
    expectThrow([&] { force.setGridLogTransform("z", 1.0, 1.0, -1.0); }, "must be finite and > 0");
    expectThrow([&] { force.setGridLogTransform("z", 0.0, 1.0, 1e-3); }, "must be finite and > 0");
    expectThrow([&] { force.setGridLogTransform("s", 1.0, 1.0, 1e-3); }, "grid scale parameter");
    force.setGridLogTransform("z", 1.0, 1.0, 1e-3);
    expectThrow([&] { force.addRestraint(0, "z", 0.0, "k", 1.0); }, "normalization parameter");
    expectThrow([&] { force.setGridScaleParameter("z", 1.0); }, "normalization parameter");
    expectThrow([&] { force.addGridKernel({0.0}, {0.0}, 1.0, 3.0); }, "width");
    expectThrow([&] { force.addGridKernel({0.0}, {0.1}, NAN, 3.0); }, "weight");
    expectThrow([&] { force.addGridKernel({0.0, 1.0}, {0.1, 0.1}, 1.0, 3.0); }, "dimensions");
    ASSERT_EQUAL(2, force.getNumGlobalParameters());
    ASSERT_EQUAL(string("z"), force.getGlobalParameterName(1));
    ASSERT_EQUAL(1.0, force.getGlobalParameterDefaultValue(1));
}

static void testSerialization() {
    LatentBiasForce force(modelPath("model_d3.pt"));
    force.addGridDimension(0, -1.0, 1.0, 11);
    force.addGridKernel({0.1}, {0.2}, 1.5, 3.0);
    stringstream plain;
    XmlSerializer::serialize<LatentBiasForce>(&force, "Force", plain);
    ASSERT(plain.str().find("version=\"2\"") != string::npos);   // no transform: still readable by older plugins
    force.setGridLogTransform("opesZ", 0.25, 2.5, 1e-5);
    stringstream buffer;
    XmlSerializer::serialize<LatentBiasForce>(&force, "Force", buffer);
    string xml = buffer.str();
    ASSERT(xml.find("version=\"3\"") != string::npos);
    LatentBiasForce* copy = XmlSerializer::deserialize<LatentBiasForce>(buffer);
    LatentBiasForce& f = dynamic_cast<LatentBiasForce&>(*copy);
    ASSERT(f.usesGridLogTransform());
    ASSERT_EQUAL(string("opesZ"), f.getGridNormalizationParameter());
    ASSERT_EQUAL(0.25, f.getGridNormalizationDefaultValue());
    ASSERT_EQUAL(2.5, f.getGridLogPrefactor());
    ASSERT_EQUAL(1e-5, f.getGridLogEpsilon());
    ASSERT(f.getGridValues() == force.getGridValues());
    delete copy;
    auto replaced = [&](const string& from, const string& to) {
        string text = xml;
        size_t at = text.find(from);
        ASSERT(at != string::npos);
        text.replace(at, from.size(), to);
        return text;
    };
    // an edited transform setting, and a version edited down to 2, are refused
    string edited = replaced("prefactor=\"2.5\"", "prefactor=\"3.5\"");
    expectThrow([&] { stringstream in(edited); delete XmlSerializer::deserialize<LatentBiasForce>(in); }, "checksum");
    string downgraded = replaced("version=\"3\"", "version=\"2\"");
    expectThrow([&] { stringstream in(downgraded); delete XmlSerializer::deserialize<LatentBiasForce>(in); }, "version was edited");
    string future = replaced("version=\"3\"", "version=\"5\"");
    expectThrow([&] { stringstream in(future); delete XmlSerializer::deserialize<LatentBiasForce>(in); }, "reads 1 to 4");
}

int main(int argc, char* argv[]) {
    initPlatforms();
    vector<pair<string, function<void()>>> tests;
    tests.push_back({"OPES kernel on the grid nodes", testKernelBlock});
    tests.push_back({"local kernel updates equal a refit", testLocalKernelsEqualRefit});
    tests.push_back({"log transform: invalid settings", testLogTransformErrors});
    tests.push_back({"log transform: serialization", testSerialization});
    for (const string& p : platformNames())
        tests.push_back({p + ": log transform energies, forces, deposits", [p] { testLogTransformForce(p); }});
    return runTests(argc, argv, tests);
}
