#ifndef LATENTBIAS_TEST_UTILITIES_H_
#define LATENTBIAS_TEST_UTILITIES_H_

/* Helpers shared by the C++ tests (finite differences, models, platforms). */

#include "LatentBiasForce.h"
#include "openmm/Context.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "openmm/internal/AssertionUtilities.h"
#include <torch/script.h>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

extern "C" void registerLatentBiasReferenceKernelFactories();

namespace LatentBiasTest {

using namespace OpenMM;
using std::string;
using std::vector;

inline string& modelDir() {
    static string dir;
    return dir;
}

inline string modelPath(const string& name) {
    return modelDir() + "/" + name;
}

/** Load OpenMM's own plugins (for the CPU platform) and register our Reference kernels. */
inline void initPlatforms() {
    Platform::loadPluginsFromDirectory(OPENMM_PLUGIN_DIR);
    registerLatentBiasReferenceKernelFactories();
}

inline vector<string> platformNames() {
    vector<string> names = {"Reference"};
    for (int i = 0; i < Platform::getNumPlatforms(); i++)
        if (Platform::getPlatform(i).getName() == "CPU")
            names.push_back("CPU");
    return names;
}

inline System* makeSystem(int n) {
    System* system = new System();
    for (int i = 0; i < n; i++)
        system->addParticle(1.0);
    return system;
}

inline vector<Vec3> testPositions() {
    return {Vec3(0.0, 0.0, 0.0), Vec3(0.31, 0.05, -0.02), Vec3(0.12, 0.33, 0.08), Vec3(-0.2, 0.15, 0.27),
            Vec3(0.25, -0.22, 0.18)};
}

/** z of the model at positions, computed directly with libtorch (float64). */
inline vector<double> computeZ(const string& path, const vector<Vec3>& positions, const Vec3* box = nullptr) {
    torch::jit::Module module = torch::jit::load(path);
    vector<double> flat;
    for (const Vec3& p : positions)
        for (int j = 0; j < 3; j++)
            flat.push_back(p[j]);
    torch::Tensor pos = torch::from_blob(flat.data(), {(long) positions.size(), 3}, torch::kFloat64).clone();
    vector<torch::jit::IValue> inputs = {pos};
    if (box != nullptr) {
        vector<double> b;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                b.push_back(box[i][j]);
        inputs.push_back(torch::from_blob(b.data(), {3, 3}, torch::kFloat64).clone());
    }
    torch::NoGradGuard guard;
    torch::Tensor z = module.forward(inputs).toTensor().to(torch::kFloat64).contiguous();
    return vector<double>(z.data_ptr<double>(), z.data_ptr<double>() + z.numel());
}

inline double energy(Context& context, int groups = -1) {
    return context.getState(State::Energy, false, groups).getPotentialEnergy();
}

inline vector<Vec3> forces(Context& context, int groups = -1) {
    return context.getState(State::Forces, false, groups).getForces();
}

/**
 * Directional central differences of the energy vs -F.d along random unit directions:
 * |FD - (-F.d)| <= rtol * max(1, max|F|).
 */
inline void checkFiniteDifferences(Context& context, const vector<Vec3>& positions, int groups = -1,
                                   double h = 1e-5, double rtol = 1e-5, int ndirs = 6) {
    std::mt19937 rng(7);
    std::normal_distribution<double> normal;
    context.setPositions(positions);
    vector<Vec3> f = forces(context, groups);
    double scale = 1.0;
    for (const Vec3& v : f)
        for (int j = 0; j < 3; j++)
            scale = std::max(scale, std::fabs(v[j]));
    for (int n = 0; n < ndirs; n++) {
        vector<Vec3> d(positions.size());
        double norm = 0;
        for (auto& v : d) {
            v = Vec3(normal(rng), normal(rng), normal(rng));
            norm += v.dot(v);
        }
        norm = std::sqrt(norm);
        vector<Vec3> plus(positions), minus(positions);
        double analytic = 0.0;
        for (size_t i = 0; i < d.size(); i++) {
            d[i] *= 1.0 / norm;
            plus[i] += d[i] * h;
            minus[i] -= d[i] * h;
            analytic -= f[i].dot(d[i]);
        }
        context.setPositions(plus);
        double ep = energy(context, groups);
        context.setPositions(minus);
        double em = energy(context, groups);
        double fd = (ep - em) / (2 * h);
        if (std::fabs(fd - analytic) > rtol * scale) {
            std::stringstream msg;
            msg << "finite differences: " << fd << " vs analytic " << analytic << " (scale " << scale << ")";
            throw OpenMMException(msg.str());
        }
    }
    context.setPositions(positions);
}

/** Expect `fn` to throw an exception whose message contains `text`. */
inline void expectThrow(const std::function<void()>& fn, const string& text) {
    try {
        fn();
    }
    catch (const std::exception& e) {
        if (string(e.what()).find(text) == string::npos)
            throw OpenMMException("expected an error containing '" + text + "', got: " + e.what());
        return;
    }
    throw OpenMMException("expected an exception containing '" + text + "'");
}

/** Run named tests; return the process exit code. */
inline int runTests(int argc, char* argv[], const vector<std::pair<string, std::function<void()>>>& tests) {
    if (argc < 2) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR" << std::endl;
        return 2;
    }
    modelDir() = argv[1];
    int failures = 0;
    for (const auto& t : tests) {
        try {
            t.second();
            std::cout << "PASS " << t.first << std::endl;
        }
        catch (const std::exception& e) {
            std::cout << "FAIL " << t.first << ": " << e.what() << std::endl;
            failures++;
        }
    }
    std::cout << (failures == 0 ? "Done" : "FAILED") << std::endl;
    return failures == 0 ? 0 : 1;
}

} // namespace LatentBiasTest

#endif
