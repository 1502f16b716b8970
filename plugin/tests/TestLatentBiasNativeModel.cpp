/* The native evaluator on its own (no TorchScript, no Context): a description assembled in memory, its analytic
 * vector-Jacobian product against central finite differences for every feature kind and activation, with and
 * without a triclinic box (atoms wrapped so that the aligned selection is split), and refused descriptions. The
 * equality with TorchScript autograd (1e-9) is tested in Python (tests/test_native_path.py). */

#include "internal/LatentBiasNativeModel.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/AssertionUtilities.h"
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

namespace {

struct Archive {
    map<string, string> files;
    int next = 0;
    string array(const vector<double>& v, const vector<int>& shape) {
        return add(string((const char*) v.data(), 8 * v.size()), "float64", shape);
    }
    string ints(const vector<long long>& v, const vector<int>& shape) {
        return add(string((const char*) v.data(), 8 * v.size()), "int64", shape);
    }
    string add(const string& bytes, const string& dtype, const vector<int>& shape) {
        string name = "latentbias_native." + to_string(next++) + ".bin";
        files[name] = bytes;
        stringstream s;
        s << "{\"file\": \"" << name << "\", \"dtype\": \"" << dtype << "\", \"shape\": [";
        for (size_t i = 0; i < shape.size(); i++)
            s << (i ? ", " : "") << shape[i];
        s << "]}";
        return s.str();
    }
    LatentBiasNativeModel load(const string& json) const {
        return LatentBiasNativeModel::fromDescription(json, [this](const string& name) {
            auto it = files.find(name);
            if (it == files.end())
                throw OpenMM::OpenMMException("missing " + name);
            return it->second;
        });
    }
};

const int NUM_ATOMS = 8;

/** A description with all four feature kinds and a 2-layer MLP with `activation`; extra JSON edits via `patch`. */
string description(Archive& a, const string& activation, mt19937& rng, int latentDim = 2) {
    normal_distribution<double> normal(0.0, 1.0);
    uniform_real_distribution<double> uniform(-1.0, 1.0);
    string pairs = a.ints({0, 3, 1, 5, 2, 7}, {3, 2});
    string contacts = a.ints({0, 6, 4, 1}, {2, 2});
    string quads = a.ints({0, 1, 2, 3, 4, 5, 6, 7}, {2, 4});
    vector<double> ref = {0.0, 0.0, 0.0, 0.15, 0.0, 0.0, 0.2, 0.14, 0.0, 0.1, 0.25, 0.12, -0.05, 0.1, 0.2};
    string atoms = a.ints({2, 4, 5, 6, 7}, {5});
    string refArr = a.array(ref, {5, 3});
    string child = a.ints({1, 2, 3, 4}, {4});
    string parent = a.ints({0, 1, 2, 0}, {4});
    int nFeatures = 3 + 2 + 4 + 15;
    vector<double> mean(nFeatures), scale(nFeatures);
    for (int i = 0; i < nFeatures; i++) {
        mean[i] = 0.1 * uniform(rng);
        scale[i] = 0.5 + 0.5 * fabs(uniform(rng));
    }
    int hidden = 6;
    vector<double> w0(hidden * nFeatures), b0(hidden), w1(latentDim * hidden), b1(latentDim);
    for (double& x : w0) x = 0.6 * normal(rng);
    for (double& x : b0) x = uniform(rng);
    for (double& x : w1) x = normal(rng);
    for (double& x : b1) x = uniform(rng);
    stringstream s;
    s << "{\"format\": \"latentbias-native-model\", \"version\": 1, \"n_atoms\": " << NUM_ATOMS
      << ", \"latent_dim\": " << latentDim << ", \"n_features\": " << nFeatures << ", \"box\": \"minimum_image\", "
      << "\"features\": [{\"type\": \"distances\", \"pairs\": " << pairs << "}, "
      << "{\"type\": \"contacts\", \"pairs\": " << contacts << ", \"r0_nm\": 0.3, \"n\": 5}, "
      << "{\"type\": \"dihedrals\", \"quadruplets\": " << quads << "}, "
      << "{\"type\": \"aligned_coordinates\", \"atoms\": " << atoms << ", \"reference_nm\": " << refArr
      << ", \"tree_child\": " << child << ", \"tree_parent\": " << parent << "}], "
      << "\"standardizer\": {\"mean\": " << a.array(mean, {nFeatures}) << ", \"scale\": " << a.array(scale, {nFeatures})
      << "}, \"layers\": [{\"weight\": " << a.array(w0, {hidden, nFeatures}) << ", \"bias\": " << a.array(b0, {hidden})
      << ", \"activation\": \"" << activation << "\"}, {\"weight\": " << a.array(w1, {latentDim, hidden})
      << ", \"bias\": " << a.array(b1, {latentDim}) << ", \"activation\": \"identity\"}]}";
    return s.str();
}

vector<double> positions(mt19937& rng) {
    // a compact, non-degenerate molecule ~0.3 nm across
    vector<double> x = {0.0, 0.0, 0.0, 0.14, 0.02, -0.03, 0.2, 0.15, 0.04, 0.12, 0.27, 0.13, -0.04, 0.12, 0.21,
                        0.25, -0.08, 0.1, 0.05, 0.3, -0.1, 0.3, 0.22, 0.25};
    normal_distribution<double> normal(0.0, 0.02);
    for (double& v : x)
        v += normal(rng);
    return x;
}

const double BOX[9] = {1.1, 0.0, 0.0, 0.3, 1.0, 0.0, -0.2, 0.35, 0.95};

/** Wrap every atom into the box (reduced triclinic, as OpenMM stores it). */
vector<double> wrap(vector<double> x) {
    for (int i = 0; i < NUM_ATOMS; i++) {
        double* p = &x[3 * i];
        for (int axis = 2; axis >= 0; axis--) {
            double s = floor(p[axis] / BOX[4 * axis]);
            for (int j = 0; j < 3; j++)
                p[j] -= s * BOX[3 * axis + j];
        }
    }
    return x;
}

/** sum_i w_i z_i and its gradient; central differences along each coordinate (h = 1e-6 nm). */
void checkFiniteDifferences(const LatentBiasNativeModel& m, vector<double> x, const double* box) {
    LatentBiasNativeModel::Workspace ws;
    m.initWorkspace(ws);
    int d = m.getLatentDim();
    vector<double> w(d), z(d);
    for (int i = 0; i < d; i++)
        w[i] = 1.0 + 0.7 * i;
    m.forward(x.data(), box, ws, z.data());
    m.backward(w.data(), ws);
    vector<double> grad(3 * NUM_ATOMS, 0.0);
    for (size_t k = 0; k < m.getAtoms().size(); k++)
        for (int j = 0; j < 3; j++)
            grad[3 * m.getAtoms()[k] + j] = ws.gradLocal[3 * k + j];
    double h = 1e-6, scale = 1.0;
    for (double g : grad)
        scale = max(scale, fabs(g));
    for (int c = 0; c < 3 * NUM_ATOMS; c++) {
        double saved = x[c], e[2];
        for (int side = 0; side < 2; side++) {
            x[c] = saved + (side == 0 ? h : -h);
            m.forward(x.data(), box, ws, z.data());
            e[side] = 0.0;
            for (int i = 0; i < d; i++)
                e[side] += w[i] * z[i];
        }
        x[c] = saved;
        double fd = (e[0] - e[1]) / (2 * h);
        if (fabs(fd - grad[c]) > 1e-6 * scale) {
            stringstream msg;
            msg << "coordinate " << c << ": finite difference " << fd << " vs analytic " << grad[c];
            throw OpenMM::OpenMMException(msg.str());
        }
    }
}

void testFiniteDifferences() {
    for (string activation : {"identity", "tanh", "silu", "softplus", "elu", "gelu", "relu"})
        for (int periodic = 0; periodic < 2; periodic++) {
            mt19937 rng(11);
            Archive a;
            LatentBiasNativeModel m = a.load(description(a, activation, rng));
            vector<double> x = positions(rng);
            if (periodic) {
                for (int i = 0; i < NUM_ATOMS; i++)
                    x[3 * i] += 0.95;  // push across the upper x face, then wrap: the selection is split
                x = wrap(x);
            }
            checkFiniteDifferences(m, x, periodic ? BOX : nullptr);
        }
}

/** Wrapping the atoms (periodic images) does not change z when the box is given. */
void testImageInvariance() {
    mt19937 rng(5);
    Archive a;
    LatentBiasNativeModel m = a.load(description(a, "tanh", rng));
    vector<double> x = positions(rng), y = x;
    for (int i = 0; i < NUM_ATOMS; i++)
        y[3 * i] += 0.95;
    y = wrap(y);
    LatentBiasNativeModel::Workspace ws;
    vector<double> zx(2), zy(2);
    m.forward(x.data(), BOX, ws, zx.data());
    m.forward(y.data(), BOX, ws, zy.data());
    for (int i = 0; i < 2; i++)
        ASSERT_EQUAL_TOL(zx[i], zy[i], 1e-12);
}

void expectRefused(const string& json, Archive& a, const string& fragment) {
    try {
        a.load(json);
    }
    catch (const OpenMM::OpenMMException& e) {
        if (string(e.what()).find(fragment) == string::npos)
            throw OpenMM::OpenMMException("expected '" + fragment + "' in: " + e.what());
        return;
    }
    throw OpenMM::OpenMMException("a bad description was accepted (expected '" + fragment + "')");
}

void testRefusedDescriptions() {
    mt19937 rng(3);
    Archive a;
    string good = description(a, "tanh", rng);
    a.load(good);
    auto replaced = [&](const string& from, const string& to) {
        size_t at = good.find(from);
        ASSERT(at != string::npos);
        return good.substr(0, at) + to + good.substr(at + from.size());
    };
    expectRefused(replaced("\"version\": 1", "\"version\": 2"), a, "version 2 is not supported");
    expectRefused(replaced("\"tanh\"", "\"swish\""), a, "unknown activation");
    expectRefused(replaced("\"n_features\": 24", "\"n_features\": 25"), a, "give 24 values but n_features is 25");
    expectRefused(replaced("\"r0_nm\": 0.3", "\"r0_nm\": -0.3"), a, "r0_nm must be a positive");
    expectRefused(replaced("\"n_atoms\": 8", "\"n_atoms\": 7"), a, "out of range");
    expectRefused(good.substr(0, good.size() - 3), a, "invalid JSON");
    // NaN weight and a truncated array
    Archive b;
    string json = description(b, "tanh", rng);
    string weight = "latentbias_native.9.bin";  // first layer's weight (10th array written)
    ASSERT(json.find(weight) != string::npos);
    string saved = b.files[weight];
    double nan = NAN;
    memcpy(&b.files[weight][16], &nan, 8);
    expectRefused(json, b, "non-finite");
    b.files[weight] = saved.substr(0, saved.size() - 8);
    expectRefused(json, b, "bytes but shape needs");
    b.files[weight] = saved;
    b.load(json);
    // Shapes whose product overflows 64 bits (2^31 * 2^31 * 4 = 2^64 wraps to 0, which an empty file would match),
    // or with too many dimensions, are refused before any size is computed from them.
    string pairs = "latentbias_native.0.bin";
    const string shape = "\"shape\": [3, 2]";
    string huge = json;
    size_t at = huge.find(shape);
    ASSERT(at != string::npos && huge.find(pairs) < at);
    huge.replace(at, shape.size(), "\"shape\": [2147483648, 2147483648, 4]");
    b.files[pairs] = "";
    expectRefused(huge, b, "holds more than 2147483648 values");
    string deep = json;
    deep.replace(at, shape.size(), "\"shape\": [1, 1, 1, 1, 1, 1, 1, 1, 1]");
    expectRefused(deep, b, "more than 8 dimensions");
}

} // namespace

int main() {
    try {
        testFiniteDifferences();
        testImageInvariance();
        testRefusedDescriptions();
    }
    catch (const std::exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
