/*
 * LatentBiasForce on the CUDA platform (built with -DLATENTBIAS_BUILD_CUDA=ON): energies, forces and z equal the
 * Reference platform's (double precision + float64 model: relative 1e-9 on energy and z, 1e-8 on forces; mixed and
 * single precision + float32 model: 1e-4 and 1e-3), periodic models with atoms shifted by box vectors, central finite
 * differences on CUDA (double), energy-only evaluations and updateParametersInContext, and the refusals the
 * Reference platform makes (a detached model, non-finite forces naming the atoms).
 *
 * Without a usable CUDA platform or device the test prints SKIP and passes, unless LATENTBIAS_REQUIRE_CUDA=1.
 */
#include "TestUtilities.h"
#include <cstdlib>
#include <map>

using namespace LatentBiasPlugin;
using namespace LatentBiasTest;
using namespace std;

static vector<double> bumpyGrid(int n0, int n1) {
    vector<double> v(n0 * n1);
    for (int i1 = 0; i1 < n1; i1++)
        for (int i0 = 0; i0 < n0; i0++) {
            double s0 = 2 * M_PI * i0 / (n0 - 1), s1 = 2 * M_PI * i1 / (n1 - 1);
            v[i0 + n0 * i1] = 12.0 * sin(s0 + 0.3) + 9.0 * cos(s1 - 0.2) * sin(s0) + 4.0 * cos(2 * s1);
        }
    return v;
}

/** System with one LatentBiasForce (2-D grid on z0, z1 + a restraint on z2 or z0) of the model `name`. */
static System* biasSystem(const string& name, const vector<Vec3>& pos, const Vec3* box, LatentBiasForce** out) {
    vector<double> z = computeZ(modelPath(name), pos, box);
    System* system = makeSystem(5);
    if (box != nullptr)
        system->setDefaultPeriodicBoxVectors(box[0], box[1], box[2]);
    LatentBiasForce* force = new LatentBiasForce(modelPath(name));
    force->addGridDimension(0, z[0] - 0.6, z[0] + 0.7, 17);
    force->addGridDimension(1, z[1] - 0.7, z[1] + 0.6, 15);
    force->setGridValues(bumpyGrid(17, 15));
    force->addRestraint((int) z.size() - 1, "", z.back() + 0.2, "", 80.0);
    force->setUsesPeriodicBoundaryConditions(box != nullptr);
    system->addForce(force);
    if (out != nullptr)
        *out = force;
    return system;
}

static Context* cudaContext(System& system, VerletIntegrator& integrator, const string& precision) {
    map<string, string> props = {{"Precision", precision}};
    return new Context(system, integrator, Platform::getPlatformByName("CUDA"), props);
}

static double relDiff(const vector<Vec3>& a, const vector<Vec3>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        Vec3 d = a[i] - b[i];
        num += d.dot(d);
        den += b[i].dot(b[i]);
    }
    return sqrt(num / max(den, 1e-300));
}

static void compare(const string& name, const string& precision, double tolE, double tolF, bool periodic) {
    Vec3 boxv[3] = {Vec3(1.5, 0, 0), Vec3(0, 1.6, 0), Vec3(0, 0, 1.7)};
    const Vec3* box = periodic ? boxv : nullptr;
    vector<Vec3> pos = testPositions();
    LatentBiasForce* force;
    System* system = biasSystem(name, pos, box, &force);
    VerletIntegrator i1(0.001), i2(0.001);
    Context ref(*system, i1, Platform::getPlatformByName("Reference"));
    Context* cu = cudaContext(*system, i2, precision);
    std::mt19937 rng(5);
    std::normal_distribution<double> normal;
    for (int conf = 0; conf < 4; conf++) {
        vector<Vec3> p = pos;
        if (conf > 0)
            for (auto& v : p)
                v += Vec3(normal(rng), normal(rng), normal(rng)) * 0.01;
        if (periodic && conf > 1) {
            p[2] += boxv[1];
            p[4] -= boxv[0] * 2.0;
            p[1] += boxv[2];
        }
        ref.setPositions(p);
        cu->setPositions(p);
        double er = energy(ref), ec = energy(*cu);
        ASSERT_EQUAL_TOL(er, ec, tolE);
        vector<double> zr = force->getLastLatentValues(ref), zc = force->getLastLatentValues(*cu);
        ASSERT_EQUAL(zr.size(), zc.size());
        for (size_t k = 0; k < zr.size(); k++)
            ASSERT_EQUAL_TOL(zr[k], zc[k], tolE);
        vector<Vec3> fr = forces(ref), fc = forces(*cu);
        double d = relDiff(fc, fr);
        if (!(d <= tolF)) {
            stringstream msg;
            msg << "forces differ from Reference by " << d << " (relative norm) > " << tolF;
            throw OpenMMException(msg.str());
        }
    }
    delete cu;
    delete system;
}

static void testFiniteDifferences(bool periodic) {
    Vec3 boxv[3] = {Vec3(1.5, 0, 0), Vec3(0, 1.6, 0), Vec3(0, 0, 1.7)};
    vector<Vec3> pos = testPositions();
    System* system = biasSystem(periodic ? "model_pbc.pt" : "model_d3.pt", pos, periodic ? boxv : nullptr, nullptr);
    VerletIntegrator integrator(0.001);
    Context* cu = cudaContext(*system, integrator, "double");
    cu->setPositions(pos);
    checkFiniteDifferences(*cu, pos, -1, 1e-5, 1e-5);
    delete cu;
    delete system;
}

static void testUpdatesAndEnergyOnly() {
    vector<Vec3> pos = testPositions();
    LatentBiasForce* force;
    System* system = biasSystem("model_d3.pt", pos, nullptr, &force);
    VerletIntegrator i1(0.001), i2(0.001);
    Context ref(*system, i1, Platform::getPlatformByName("Reference"));
    Context* cu = cudaContext(*system, i2, "double");
    ref.setPositions(pos);
    cu->setPositions(pos);
    double e0 = energy(*cu);  // energy only: forward pass without autograd
    ASSERT_EQUAL_TOL(energy(ref), e0, 1e-9);
    vector<double> v = bumpyGrid(17, 15);
    for (double& x : v)
        x = 2.0 * x + 1.0;
    force->setGridValues(v);
    force->updateParametersInContext(ref);
    force->updateParametersInContext(*cu);
    double e1 = energy(*cu);
    ASSERT(fabs(e1 - e0) > 1e-3);
    ASSERT_EQUAL_TOL(energy(ref), e1, 1e-9);
    ASSERT(relDiff(forces(*cu), forces(ref)) < 1e-8);
    cu->setParameter("latent_z0_" + to_string(force->getNumRestraints() - 1), 0.4);
    ref.setParameter("latent_z0_" + to_string(force->getNumRestraints() - 1), 0.4);
    ASSERT_EQUAL_TOL(energy(ref), energy(*cu), 1e-9);
    // a few MD steps on CUDA must keep the energy finite and equal to Reference at the same positions
    i2.step(10);
    ref.setPositions(cu->getState(State::Positions).getPositions());
    ASSERT_EQUAL_TOL(energy(ref), energy(*cu), 1e-9);
    delete cu;
    delete system;
}

/** As on Reference (checked in the same loop): a model whose output is detached is refused at the first force
 *  evaluation instead of applying exactly zero force, and coincident atoms of a pair distance (sqrt at 0: a NaN
 *  gradient) raise naming the two atoms instead of reaching the integrator. */
static void testRefusals() {
    vector<Vec3> pos = testPositions();
    vector<Vec3> coincident = pos;
    coincident[1] = coincident[0];
    for (const string& platform : {"Reference", "CUDA"}) {
        System* detached = makeSystem(5);
        LatentBiasForce* d = new LatentBiasForce(modelPath("model_detached.pt"));
        d->addRestraint(0, "", 0.1, "", 50.0);
        detached->addForce(d);
        System* healthy = makeSystem(5);
        LatentBiasForce* h = new LatentBiasForce(modelPath("model_d3.pt"));
        h->addRestraint(0, "", 0.1, "", 50.0);
        healthy->addForce(h);
        VerletIntegrator i1(0.001), i2(0.001);
        Context* c1 = platform == "CUDA" ? cudaContext(*detached, i1, "double")
                                         : new Context(*detached, i1, Platform::getPlatformByName(platform));
        Context* c2 = platform == "CUDA" ? cudaContext(*healthy, i2, "double")
                                         : new Context(*healthy, i2, Platform::getPlatformByName(platform));
        c1->setPositions(pos);
        expectThrow([&] { c1->getState(State::Forces); }, "does not depend differentiably");
        c2->setPositions(coincident);
        expectThrow([&] { c2->getState(State::Forces); }, "not finite on 2 atom(s) (indices 0, 1)");
        c2->setPositions(pos);  // a sound structure evaluates again
        ASSERT(std::isfinite(c2->getState(State::Energy | State::Forces).getPotentialEnergy()));
        delete c1;
        delete c2;
        delete detached;
        delete healthy;
    }
}

int main(int argc, char* argv[]) {
    initPlatforms();
    bool require = getenv("LATENTBIAS_REQUIRE_CUDA") != nullptr && string(getenv("LATENTBIAS_REQUIRE_CUDA")) == "1";
    string reason;
    try {
        // OpenMM's CUDA platform (loaded by initPlatforms from OpenMM's plugin folder; where the build was pointed at
        // a libOpenMMCUDA elsewhere, e.g. an unzipped openmm-cuda wheel, that one), then our CUDA kernels
        bool haveCuda = false;
        for (int i = 0; i < Platform::getNumPlatforms(); i++)
            haveCuda = haveCuda || Platform::getPlatform(i).getName() == "CUDA";
        if (!haveCuda)
            Platform::loadPluginLibrary(OPENMM_CUDA_PLUGIN);
        Platform::loadPluginLibrary(LATENTBIAS_CUDA_PLUGIN);
        Platform& cuda = Platform::getPlatformByName("CUDA");
        System s;
        s.addParticle(1.0);
        VerletIntegrator integrator(0.001);
        Context probe(s, integrator, cuda);
        cout << "CUDA device: " << cuda.getPropertyValue(probe, "DeviceName") << ", OpenMM " << cuda.getOpenMMVersion()
             << endl;
    }
    catch (const std::exception& e) {
        reason = e.what();
    }
    if (!reason.empty()) {
        cout << (require ? "FAIL" : "SKIP") << ": no usable CUDA platform (" << reason << ")" << endl;
        for (const string& f : Platform::getPluginLoadFailures())
            cout << "  plugin load failure: " << f << endl;
        return require ? 1 : 0;
    }
    vector<pair<string, function<void()>>> tests = {
        {"CUDA double vs Reference (float64 model)", [] { compare("model_d3.pt", "double", 1e-9, 1e-8, false); }},
        {"CUDA mixed vs Reference (float32 model)", [] { compare("model_d3_f32.pt", "mixed", 1e-4, 1e-3, false); }},
        {"CUDA single vs Reference (float32 model)", [] { compare("model_d3_f32.pt", "single", 1e-4, 1e-3, false); }},
        {"CUDA double vs Reference, periodic (shifted atoms)", [] { compare("model_pbc.pt", "double", 1e-9, 1e-8, true); }},
        {"CUDA mixed vs Reference, periodic (shifted atoms)", [] { compare("model_pbc.pt", "mixed", 1e-4, 1e-3, true); }},
        {"CUDA finite differences", [] { testFiniteDifferences(false); }},
        {"CUDA finite differences, periodic", [] { testFiniteDifferences(true); }},
        {"CUDA updateParametersInContext, energy only, steps", [] { testUpdatesAndEnergyOnly(); }},
        {"CUDA refuses a detached model and names atoms with non-finite forces", [] { testRefusals(); }},
    };
    return runTests(argc, argv, tests);
}
