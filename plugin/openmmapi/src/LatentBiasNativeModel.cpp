#include "internal/LatentBiasNativeModel.h"
#include "internal/LatentBiasJson.h"
#include "openmm/OpenMMException.h"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <sstream>

using namespace std;
using OpenMM::OpenMMException;

namespace LatentBiasPlugin {

namespace {

const char* const WHERE = "LatentBiasForce: the model's native description (latentbias_native.json)";

[[noreturn]] void fail(const string& what) {
    throw OpenMMException(string(WHERE) + ": " + what + ". Re-export the model with latentbias.save_model, or force "
                          "the TorchScript path (setEvaluationPath(\"torch\"))");
}

/** Most values one array of a description may hold (16 GiB of float64; real models hold far fewer). */
const long long MaxArrayValues = 1LL << 31;
/** Most dimensions an array's shape may have (the description uses 1 and 2). */
const size_t MaxArrayDims = 8;

struct ArrayData {
    vector<long long> shape;
    vector<double> f64;
    vector<long long> i64;
    /** Number of values: the product of the shape, checked (readArray refuses shapes over MaxArrayValues). */
    size_t size() const {
        size_t n = 1;
        for (long long s : shape)
            n *= (size_t) s;
        return n;
    }
};

/** The product of a shape, or -1 when it exceeds MaxArrayValues (checked before every multiplication). */
long long checkedCount(const vector<long long>& shape) {
    long long n = 1;
    for (long long s : shape) {
        if (s == 0)
            return 0;
        if (n > MaxArrayValues / s)
            return -1;
        n *= s;
    }
    return n;
}

ArrayData readArray(const JsonValue& ref, const string& field, const function<string(const string&)>& reader,
                    bool integer) {
    if (ref.type != JsonValue::Object)
        fail(field + " must be an array reference {\"file\", \"dtype\", \"shape\"}");
    const string& file = ref.at("file", field).asString(field + ".file");
    const string& dtype = ref.at("dtype", field).asString(field + ".dtype");
    const JsonValue& shape = ref.at("shape", field);
    if (shape.type != JsonValue::Array)
        fail(field + ".shape must be a list of sizes");
    ArrayData a;
    for (const JsonValue& s : shape.items) {
        long long n = s.asInteger(field + ".shape");
        if (n < 0 || n > (1LL << 31))
            fail(field + ".shape has an invalid size");
        a.shape.push_back(n);
    }
    if (a.shape.size() > MaxArrayDims)
        fail(field + ".shape has more than 8 dimensions");
    long long count = checkedCount(a.shape);
    if (count < 0) {
        stringstream msg;
        msg << field << ".shape (";
        for (size_t i = 0; i < a.shape.size(); i++)
            msg << (i ? ", " : "") << a.shape[i];
        msg << ") holds more than " << MaxArrayValues << " values (the description is corrupt)";
        fail(msg.str());
    }
    if (dtype != (integer ? "int64" : "float64"))
        fail(field + " must have dtype " + (integer ? "int64" : "float64") + ", got " + dtype);
    string bytes;
    try {
        bytes = reader(file);
    }
    catch (const std::exception& e) {
        fail(field + ": cannot read the array file " + file + " (" + e.what() + ")");
    }
    size_t n = (size_t) count;  // <= 2^31, so 8 * n cannot overflow
    if (bytes.size() != 8 * n) {
        stringstream msg;
        msg << field << ": the array file " << file << " has " << bytes.size() << " bytes but shape needs " << 8 * n
            << " (" << n << " values of 8 bytes)";
        fail(msg.str());
    }
    // Little-endian 8-byte values (every platform OpenMM supports is little-endian; checked once here).
    const uint16_t probe = 1;
    if (*reinterpret_cast<const unsigned char*>(&probe) != 1)
        fail("this machine is big-endian; the description stores little-endian arrays");
    if (integer) {
        a.i64.resize(n);
        if (n > 0)
            memcpy(a.i64.data(), bytes.data(), 8 * n);
    }
    else {
        a.f64.resize(n);
        if (n > 0)
            memcpy(a.f64.data(), bytes.data(), 8 * n);
        for (size_t i = 0; i < n; i++)
            if (!std::isfinite(a.f64[i])) {
                stringstream msg;
                msg << field << " contains a non-finite value (" << a.f64[i] << " at flat index " << i << ")";
                fail(msg.str());
            }
    }
    return a;
}

void requireShape(const ArrayData& a, const vector<long long>& shape, const string& field) {
    if (a.shape != shape) {
        stringstream msg;
        msg << field << " has shape (";
        for (size_t i = 0; i < a.shape.size(); i++)
            msg << (i ? ", " : "") << a.shape[i];
        msg << ") but (";
        for (size_t i = 0; i < shape.size(); i++)
            msg << (i ? ", " : "") << shape[i];
        msg << ") is required";
        fail(msg.str());
    }
}

inline void minimumImage(double* d, const double* box) {
    for (int axis = 2; axis >= 0; axis--) {
        double s = std::nearbyint(d[axis] / box[4 * axis]);  // round half to even, as torch.round
        d[0] -= box[3 * axis] * s;
        d[1] -= box[3 * axis + 1] * s;
        d[2] -= box[3 * axis + 2] * s;
    }
}

inline void cross(const double* a, const double* b, double* c) {
    c[0] = a[1] * b[2] - a[2] * b[1];
    c[1] = a[2] * b[0] - a[0] * b[2];
    c[2] = a[0] * b[1] - a[1] * b[0];
}

inline double dot(const double* a, const double* b) {
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

const double SQRT1_2 = 0.70710678118654752440;
const double INV_SQRT_2PI = 0.39894228040143267794;

inline double activate(int kind, double x) {
    switch (kind) {
        case LatentBiasNativeModel::Tanh: return std::tanh(x);
        case LatentBiasNativeModel::SiLU: return x / (1.0 + std::exp(-x));
        case LatentBiasNativeModel::Softplus: return x > 20.0 ? x : std::log1p(std::exp(x));
        case LatentBiasNativeModel::ELU: return x > 0.0 ? x : std::expm1(x);
        case LatentBiasNativeModel::GELU: return 0.5 * x * (1.0 + std::erf(x * SQRT1_2));
        case LatentBiasNativeModel::ReLU: return x > 0.0 ? x : 0.0;
        default: return x;
    }
}

/** d activation / dx at pre-activation x (y = activation value). */
inline double activationDerivative(int kind, double x, double y) {
    switch (kind) {
        case LatentBiasNativeModel::Tanh: return 1.0 - y * y;
        case LatentBiasNativeModel::SiLU: {
            double s = 1.0 / (1.0 + std::exp(-x));
            return s * (1.0 + x * (1.0 - s));
        }
        case LatentBiasNativeModel::Softplus: {
            if (x > 20.0)
                return 1.0;
            double z = std::exp(x);
            return z / (z + 1.0);
        }
        case LatentBiasNativeModel::ELU: return x > 0.0 ? 1.0 : std::exp(x);
        case LatentBiasNativeModel::GELU: return 0.5 * (1.0 + std::erf(x * SQRT1_2)) + x * INV_SQRT_2PI * std::exp(-0.5 * x * x);
        case LatentBiasNativeModel::ReLU: return x > 0.0 ? 1.0 : 0.0;
        default: return 1.0;
    }
}

int parseActivation(const string& name, const string& field) {
    static const map<string, int> names = {{"identity", LatentBiasNativeModel::Identity},
        {"tanh", LatentBiasNativeModel::Tanh}, {"silu", LatentBiasNativeModel::SiLU},
        {"softplus", LatentBiasNativeModel::Softplus}, {"elu", LatentBiasNativeModel::ELU},
        {"gelu", LatentBiasNativeModel::GELU}, {"relu", LatentBiasNativeModel::ReLU}};
    auto it = names.find(name);
    if (it == names.end())
        fail(field + ": unknown activation \"" + name + "\" (known: identity, tanh, silu, softplus, elu, gelu, relu)");
    return it->second;
}

/**
 * SVD of a 3x3 matrix by one-sided Jacobi (Hestenes), accurate to working precision: C V = [s1 u1, s2 u2, s3 u3],
 * s1 >= s2 >= s3 >= 0. Returns V (columns v_i: V[3*a + i]) and the columns of C V (W[3*a + i]).
 */
void jacobiSvd3(const double* C, double* V, double* W, double* s) {
    for (int k = 0; k < 9; k++) {
        W[k] = C[k];
        V[k] = (k % 4 == 0) ? 1.0 : 0.0;
    }
    for (int sweep = 0; sweep < 30; sweep++) {
        bool rotated = false;
        for (int p = 0; p < 2; p++)
            for (int q = p + 1; q < 3; q++) {
                double alpha = 0, beta = 0, gamma = 0;
                for (int a = 0; a < 3; a++) {
                    alpha += W[3 * a + p] * W[3 * a + p];
                    beta += W[3 * a + q] * W[3 * a + q];
                    gamma += W[3 * a + p] * W[3 * a + q];
                }
                if (gamma == 0.0 || std::fabs(gamma) <= 1e-17 * std::sqrt(alpha * beta))
                    continue;
                rotated = true;
                double zeta = (beta - alpha) / (2.0 * gamma);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::sqrt(1.0 + zeta * zeta));
                double c = 1.0 / std::sqrt(1.0 + t * t), sn = c * t;
                for (int a = 0; a < 3; a++) {
                    double wp = W[3 * a + p], wq = W[3 * a + q];
                    W[3 * a + p] = c * wp - sn * wq;
                    W[3 * a + q] = sn * wp + c * wq;
                    double vp = V[3 * a + p], vq = V[3 * a + q];
                    V[3 * a + p] = c * vp - sn * vq;
                    V[3 * a + q] = sn * vp + c * vq;
                }
            }
        if (!rotated)
            break;
    }
    for (int i = 0; i < 3; i++)
        s[i] = std::sqrt(W[i] * W[i] + W[3 + i] * W[3 + i] + W[6 + i] * W[6 + i]);
    // sort descending (columns of W and V together)
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2 - i; j++)
            if (s[j] < s[j + 1]) {
                swap(s[j], s[j + 1]);
                for (int a = 0; a < 3; a++) {
                    swap(W[3 * a + j], W[3 * a + j + 1]);
                    swap(V[3 * a + j], V[3 * a + j + 1]);
                }
            }
}

} // namespace

LatentBiasNativeModel LatentBiasNativeModel::fromDescription(const string& json,
                                                             const function<string(const string&)>& reader) {
    JsonValue doc;
    try {
        doc = parseJson(json);
    }
    catch (const OpenMMException& e) {
        fail(e.what());
    }
    if (doc.type != JsonValue::Object)
        fail("the document must be a JSON object");
    try {
        if (doc.at("format", "the description").asString("format") != "latentbias-native-model")
            fail("format must be \"latentbias-native-model\"");
        long long version = doc.at("version", "the description").asInteger("version");
        if (version < 1 || version > LATENTBIAS_NATIVE_VERSION) {
            stringstream msg;
            msg << "version " << version << " is not supported (this plugin reads 1.." << LATENTBIAS_NATIVE_VERSION
                << "; update latentbias)";
            fail(msg.str());
        }
        LatentBiasNativeModel m;
        long long nAtoms = doc.at("n_atoms", "the description").asInteger("n_atoms");
        long long latent = doc.at("latent_dim", "the description").asInteger("latent_dim");
        long long nFeatures = doc.at("n_features", "the description").asInteger("n_features");
        if (nAtoms <= 0 || latent <= 0 || nFeatures <= 0 || nAtoms > (1LL << 30) || nFeatures > (1LL << 28))
            fail("n_atoms, latent_dim and n_features must be positive");
        m.numAtoms = (int) nAtoms;
        m.latentDim = (int) latent;
        const JsonValue* box = doc.find("box");
        if (box != nullptr && box->asString("box") != "minimum_image")
            fail("box must be \"minimum_image\" (the only periodic handling of format 1)");

        // ------------------------------------------------------------------------------------------ features
        const JsonValue& features = doc.at("features", "the description");
        if (features.type != JsonValue::Array || features.items.empty())
            fail("features must be a non-empty list");
        vector<long long> systemIndices;  // system atom per entry of m.indices
        long long offset = 0, scratch = 0;  // checked against n_features (<= 2^28) and 2^30 after every block
        for (size_t b = 0; b < features.items.size(); b++) {
            const JsonValue& f = features.items[b];
            string field = "features[" + to_string(b) + "]";
            const string& type = f.at("type", field).asString(field + ".type");
            Block block{};
            block.offset = offset;
            block.indexStart = systemIndices.size();
            if (type == "distances" || type == "contacts") {
                ArrayData pairs = readArray(f.at("pairs", field), field + ".pairs", reader, true);
                if (pairs.shape.size() != 2 || pairs.shape[1] != 2 || pairs.shape[0] < 1)
                    fail(field + ".pairs must have shape (n_pairs >= 1, 2)");
                block.kind = type == "distances" ? Distances : Contacts;
                block.count = pairs.shape[0];
                for (int k = 0; k < block.count; k++)
                    if (pairs.i64[2 * k] == pairs.i64[2 * k + 1])
                        fail(field + ".pairs: pair " + to_string(k) + " joins an atom to itself");
                systemIndices.insert(systemIndices.end(), pairs.i64.begin(), pairs.i64.end());
                if (block.kind == Contacts) {
                    block.r0 = f.at("r0_nm", field).asNumber(field + ".r0_nm");
                    long long n = f.at("n", field).asInteger(field + ".n");
                    if (!(block.r0 > 0) || !std::isfinite(block.r0))
                        fail(field + ".r0_nm must be a positive distance in nm");
                    if (n <= 0 || n > 1000)
                        fail(field + ".n must be a positive integer");
                    block.exponent = (int) n;
                }
                block.scratchStart = scratch;
                scratch += 5LL * block.count;
            }
            else if (type == "dihedrals") {
                ArrayData quads = readArray(f.at("quadruplets", field), field + ".quadruplets", reader, true);
                if (quads.shape.size() != 2 || quads.shape[1] != 4 || quads.shape[0] < 1)
                    fail(field + ".quadruplets must have shape (n_dihedrals >= 1, 4)");
                block.kind = Dihedrals;
                block.count = 2 * quads.shape[0];
                systemIndices.insert(systemIndices.end(), quads.i64.begin(), quads.i64.end());
                block.scratchStart = scratch;
                scratch += 11 * quads.shape[0];
            }
            else if (type == "aligned_coordinates") {
                ArrayData sel = readArray(f.at("atoms", field), field + ".atoms", reader, true);
                if (sel.shape.size() != 1 || sel.shape[0] < 3 || sel.shape[0] > nAtoms)
                    fail(field + ".atoms must be a list of at least 3 (and at most n_atoms) atoms");
                int n = (int) sel.shape[0];
                ArrayData ref = readArray(f.at("reference_nm", field), field + ".reference_nm", reader, false);
                requireShape(ref, {n, 3}, field + ".reference_nm");
                ArrayData child = readArray(f.at("tree_child", field), field + ".tree_child", reader, true);
                ArrayData parent = readArray(f.at("tree_parent", field), field + ".tree_parent", reader, true);
                requireShape(child, {n - 1}, field + ".tree_child");
                requireShape(parent, {n - 1}, field + ".tree_parent");
                // Each edge must hang a new atom from one already placed, starting from atom 0 (make-whole order).
                vector<bool> placed(n, false);
                placed[0] = true;
                for (int e = 0; e < n - 1; e++) {
                    long long c = child.i64[e], p = parent.i64[e];
                    if (c < 0 || c >= n || p < 0 || p >= n || placed[c] || !placed[p])
                        fail(field + ": tree_child/tree_parent are not a spanning tree rooted at atom 0 in placement "
                             "order (edge " + to_string(e) + ")");
                    placed[c] = true;
                    m.treeChild.push_back((int) c);
                    m.treeParent.push_back((int) p);
                }
                vector<long long> sorted = sel.i64;
                sort(sorted.begin(), sorted.end());
                if (unique(sorted.begin(), sorted.end()) != sorted.end())
                    fail(field + ".atoms contains duplicates");
                block.kind = AlignedCoordinates;
                block.count = 3 * n;
                block.numAtoms = n;
                block.treeStart = m.treeChild.size() - (n - 1);
                block.referenceStart = m.reference.size();
                m.reference.insert(m.reference.end(), ref.f64.begin(), ref.f64.end());
                systemIndices.insert(systemIndices.end(), sel.i64.begin(), sel.i64.end());
                block.scratchStart = scratch;
                scratch += 3LL * n + 21;
            }
            else
                fail(field + ": unknown feature type \"" + type +
                     "\" (known: distances, contacts, dihedrals, aligned_coordinates)");
            offset += block.count;
            if (offset > nFeatures || scratch > (1LL << 30)) {
                stringstream msg;
                msg << "the features up to " << field << " give more than n_features = " << nFeatures << " values";
                fail(msg.str());
            }
            m.blocks.push_back(block);
        }
        if (offset != nFeatures) {
            stringstream msg;
            msg << "the features give " << offset << " values but n_features is " << nFeatures;
            fail(msg.str());
        }
        m.numFeatures = (int) offset;
        m.scratchSize = (int) scratch;
        for (size_t k = 0; k < systemIndices.size(); k++)
            if (systemIndices[k] < 0 || systemIndices[k] >= nAtoms) {
                stringstream msg;
                msg << "atom index " << systemIndices[k] << " is out of range for n_atoms = " << nAtoms;
                fail(msg.str());
            }
        for (long long a : systemIndices)
            m.atoms.push_back((int) a);
        sort(m.atoms.begin(), m.atoms.end());
        m.atoms.erase(unique(m.atoms.begin(), m.atoms.end()), m.atoms.end());
        for (long long a : systemIndices)
            m.indices.push_back(lower_bound(m.atoms.begin(), m.atoms.end(), (int) a) - m.atoms.begin());

        // ----------------------------------------------------------------------------------- standardisation
        const JsonValue& st = doc.at("standardizer", "the description");
        ArrayData mean = readArray(st.at("mean", "standardizer"), "standardizer.mean", reader, false);
        ArrayData scale = readArray(st.at("scale", "standardizer"), "standardizer.scale", reader, false);
        requireShape(mean, {nFeatures}, "standardizer.mean");
        requireShape(scale, {nFeatures}, "standardizer.scale");
        for (long long i = 0; i < nFeatures; i++)
            if (!(scale.f64[i] > 0))
                fail("standardizer.scale[" + to_string(i) + "] must be positive");
        m.mean = mean.f64;
        m.scale = scale.f64;

        // ---------------------------------------------------------------------------------------- layers
        const JsonValue& layers = doc.at("layers", "the description");
        if (layers.type != JsonValue::Array || layers.items.empty())
            fail("layers must be a non-empty list");
        long long width = nFeatures;
        m.maxWidth = nFeatures;
        if (layers.items.size() > 64)
            fail("more than 64 layers");
        for (size_t l = 0; l < layers.items.size(); l++) {
            const JsonValue& L = layers.items[l];
            string field = "layers[" + to_string(l) + "]";
            ArrayData w = readArray(L.at("weight", field), field + ".weight", reader, false);
            if (w.shape.size() != 2 || w.shape[0] < 1 || w.shape[1] != width) {
                stringstream msg;
                msg << field << ".weight must have shape (n_out, " << width << ") (the previous layer's width)";
                fail(msg.str());
            }
            ArrayData bias = readArray(L.at("bias", field), field + ".bias", reader, false);
            requireShape(bias, {w.shape[0]}, field + ".bias");
            if ((long long) (m.parameters.size() + w.f64.size() + bias.f64.size()) > MaxArrayValues)
                fail("the layers hold more than 2^31 parameters");
            Layer layer;
            layer.numInputs = width;
            layer.numOutputs = w.shape[0];
            layer.activation = parseActivation(L.at("activation", field).asString(field + ".activation"), field);
            layer.weightStart = m.parameters.size();
            m.parameters.insert(m.parameters.end(), w.f64.begin(), w.f64.end());
            layer.biasStart = m.parameters.size();
            m.parameters.insert(m.parameters.end(), bias.f64.begin(), bias.f64.end());
            m.layers.push_back(layer);
            width = layer.numOutputs;
            m.maxWidth = max(m.maxWidth, (int) width);
        }
        if (width != latent) {
            stringstream msg;
            msg << "the last layer has " << width << " outputs but latent_dim is " << latent;
            fail(msg.str());
        }
        if (m.layers.size() > 64)
            fail("more than 64 layers");
        if (m.layers.back().activation != Identity)
            fail("the last layer must have activation \"identity\" (z is its linear output)");
        return m;
    }
    catch (const OpenMMException& e) {
        string what = e.what();
        if (what.rfind(WHERE, 0) == 0)
            throw;
        fail(what);
    }
}

void LatentBiasNativeModel::initWorkspace(Workspace& ws) const {
    ws.local.assign(3 * atoms.size(), 0.0);
    ws.gradLocal.assign(3 * atoms.size(), 0.0);
    ws.scratch.assign(scratchSize, 0.0);
    ws.features.assign(numFeatures, 0.0);
    size_t act = 0;
    for (const Layer& l : layers)
        act += 2 * l.numOutputs;
    ws.activations.assign(act + numFeatures, 0.0);
    ws.grad.assign(maxWidth, 0.0);
    ws.gradNext.assign(maxWidth, 0.0);
    ws.gradFeatures.assign(numFeatures, 0.0);
    int maxAligned = 0;
    for (const Block& b : blocks)
        maxAligned = max(maxAligned, b.kind == AlignedCoordinates ? 3 * b.numAtoms : 0);
    ws.blockGrad.assign(maxAligned, 0.0);
}

void LatentBiasNativeModel::forward(const double* positions, const double* box, Workspace& ws, double* z) const {
    if (ws.local.size() != 3 * atoms.size())
        initWorkspace(ws);
    ws.periodic = box != nullptr;
    if (box != nullptr)
        for (int k = 0; k < 9; k++)
            ws.box[k] = box[k];
    for (size_t k = 0; k < atoms.size(); k++)
        for (int j = 0; j < 3; j++)
            ws.local[3 * k + j] = positions[3 * (size_t) atoms[k] + j];
    const double* x = ws.local.data();
    double* f = ws.features.data();
    double* sc = ws.scratch.data();
    for (const Block& b : blocks) {
        const int* idx = indices.data() + b.indexStart;
        double* s = sc + b.scratchStart;
        if (b.kind == Distances || b.kind == Contacts) {
            for (int k = 0; k < b.count; k++) {
                const double* p = x + 3 * idx[2 * k];
                const double* q = x + 3 * idx[2 * k + 1];
                double* d = s + 5 * k;
                d[0] = q[0] - p[0];
                d[1] = q[1] - p[1];
                d[2] = q[2] - p[2];
                if (ws.periodic)
                    minimumImage(d, ws.box);
                double r2 = dot(d, d);
                if (b.kind == Distances) {
                    d[3] = std::sqrt(r2);
                    f[b.offset + k] = d[3];
                }
                else {
                    double x2 = r2 / (b.r0 * b.r0);
                    double value = 1.0 / (1.0 + std::pow(x2, 0.5 * b.exponent));
                    d[3] = x2;
                    d[4] = value;
                    f[b.offset + k] = value;
                }
            }
        }
        else if (b.kind == Dihedrals) {
            int m = b.count / 2;
            for (int k = 0; k < m; k++) {
                const double* p0 = x + 3 * idx[4 * k];
                const double* p1 = x + 3 * idx[4 * k + 1];
                const double* p2 = x + 3 * idx[4 * k + 2];
                const double* p3 = x + 3 * idx[4 * k + 3];
                double* t = s + 11 * k;
                double *b1 = t, *b2 = t + 3, *b3 = t + 6;
                for (int j = 0; j < 3; j++) {
                    b1[j] = p1[j] - p0[j];
                    b2[j] = p2[j] - p1[j];
                    b3[j] = p3[j] - p2[j];
                }
                if (ws.periodic) {
                    minimumImage(b1, ws.box);
                    minimumImage(b2, ws.box);
                    minimumImage(b3, ws.box);
                }
                double n12[3], n23[3];
                cross(b1, b2, n12);
                cross(b2, b3, n23);
                double y = std::sqrt(dot(b2, b2)) * dot(b1, n23);
                double xx = dot(n12, n23);
                double norm = std::sqrt(xx * xx + y * y);
                t[9] = xx;
                t[10] = y;
                f[b.offset + k] = y / norm;
                f[b.offset + m + k] = xx / norm;
            }
        }
        else {  // aligned coordinates
            int n = b.numAtoms;
            double* c = s;              // centred coordinates (3n)
            double* rot = s + 3 * n;    // rotation (row-major, out = c @ rot)
            double* V = rot + 9;        // right singular vectors (columns)
            double* lambda = V + 9;     // signed singular values
            for (int k = 0; k < n; k++)
                for (int j = 0; j < 3; j++)
                    c[3 * k + j] = x[3 * idx[k] + j];
            if (ws.periodic) {
                const int* child = treeChild.data() + b.treeStart;
                const int* parent = treeParent.data() + b.treeStart;
                // whole[child] = whole[parent] + minimum_image(sel[child] - sel[parent]); `c` holds sel until
                // overwritten, so bonds are taken from the original positions.
                double bond[3];
                // Edges are in placement order: a child's parent is already whole; its own raw position is still
                // unmodified in c (each atom is a child once, placed after its parent).
                for (int e = 0; e < n - 1; e++) {
                    int ch = child[e], pa = parent[e];
                    const double* rawChild = x + 3 * idx[ch];
                    const double* rawParent = x + 3 * idx[pa];
                    for (int j = 0; j < 3; j++)
                        bond[j] = rawChild[j] - rawParent[j];
                    minimumImage(bond, ws.box);
                    for (int j = 0; j < 3; j++)
                        c[3 * ch + j] = c[3 * pa + j] + bond[j];
                }
            }
            double centre[3] = {0, 0, 0};
            for (int k = 0; k < n; k++)
                for (int j = 0; j < 3; j++)
                    centre[j] += c[3 * k + j];
            for (int j = 0; j < 3; j++)
                centre[j] /= n;
            for (int k = 0; k < n; k++)
                for (int j = 0; j < 3; j++)
                    c[3 * k + j] -= centre[j];
            const double* ref = reference.data() + b.referenceStart;
            double C[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
            for (int k = 0; k < n; k++)
                for (int a = 0; a < 3; a++)
                    for (int q = 0; q < 3; q++)
                        C[3 * a + q] += c[3 * k + a] * ref[3 * k + q];
            double W[9], sv[3];
            jacobiSvd3(C, V, W, sv);
            double u[3][3];  // u[i] = i-th left singular vector (sign-corrected third)
            for (int i = 0; i < 2; i++)
                for (int a = 0; a < 3; a++)
                    u[i][a] = W[3 * a + i] / sv[i];
            double detV = V[0] * (V[4] * V[8] - V[5] * V[7]) - V[1] * (V[3] * V[8] - V[5] * V[6]) +
                          V[2] * (V[3] * V[7] - V[4] * V[6]);
            cross(u[0], u[1], u[2]);
            double sign = detV < 0 ? -1.0 : 1.0;
            for (int a = 0; a < 3; a++)
                u[2][a] *= sign;
            lambda[0] = sv[0];
            lambda[1] = sv[1];
            lambda[2] = u[2][0] * W[2] + u[2][1] * W[5] + u[2][2] * W[8];  // u3' . (C v3) = +-s3
            for (int a = 0; a < 3; a++)
                for (int q = 0; q < 3; q++)
                    rot[3 * a + q] = u[0][a] * V[3 * q] + u[1][a] * V[3 * q + 1] + u[2][a] * V[3 * q + 2];
            double* out = f + b.offset;
            for (int k = 0; k < n; k++)
                for (int q = 0; q < 3; q++)
                    out[3 * k + q] = c[3 * k] * rot[q] + c[3 * k + 1] * rot[3 + q] + c[3 * k + 2] * rot[6 + q];
        }
    }
    // Standardisation and the dense layers.
    double* in = ws.activations.data();
    for (int i = 0; i < numFeatures; i++)
        in[i] = (f[i] - mean[i]) / scale[i];
    for (const Layer& l : layers) {
        double* pre = in + l.numInputs;
        double* post = pre + l.numOutputs;
        const double* W = parameters.data() + l.weightStart;
        const double* bias = parameters.data() + l.biasStart;
        for (int o = 0; o < l.numOutputs; o++) {
            // four independent partial sums: the compiler keeps them in vector registers (no reassociation needed)
            const double* row = W + (size_t) o * l.numInputs;
            double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
            int i = 0;
            for (; i + 4 <= l.numInputs; i += 4) {
                s0 += row[i] * in[i];
                s1 += row[i + 1] * in[i + 1];
                s2 += row[i + 2] * in[i + 2];
                s3 += row[i + 3] * in[i + 3];
            }
            for (; i < l.numInputs; i++)
                s0 += row[i] * in[i];
            pre[o] = ((s0 + s1) + (s2 + s3)) + bias[o];
            post[o] = activate(l.activation, pre[o]);
        }
        in = post;
    }
    for (int i = 0; i < latentDim; i++)
        z[i] = in[i];
}

void LatentBiasNativeModel::backward(const double* dVdz, Workspace& ws) const {
    // Dense layers, last to first: g_pre = g_post * act'(pre); g_in = W^T g_pre.
    double* g = ws.grad.data();
    double* gNext = ws.gradNext.data();
    for (int i = 0; i < latentDim; i++)
        g[i] = dVdz[i];
    // Offsets of each layer's input within ws.activations.
    size_t inputStart[64];
    inputStart[0] = 0;
    for (size_t l = 0; l + 1 < layers.size(); l++)
        inputStart[l + 1] = inputStart[l] + layers[l].numInputs + layers[l].numOutputs;
    for (int l = (int) layers.size() - 1; l >= 0; l--) {
        const Layer& L = layers[l];
        const double* pre = ws.activations.data() + inputStart[l] + L.numInputs;
        const double* post = pre + L.numOutputs;
        const double* W = parameters.data() + L.weightStart;
        for (int o = 0; o < L.numOutputs; o++)
            g[o] *= activationDerivative(L.activation, pre[o], post[o]);
        for (int i = 0; i < L.numInputs; i++)
            gNext[i] = 0.0;
        for (int o = 0; o < L.numOutputs; o++) {
            const double* row = W + (size_t) o * L.numInputs;
            double go = g[o];
            for (int i = 0; i < L.numInputs; i++)
                gNext[i] += row[i] * go;
        }
        swap(g, gNext);
    }
    double* gf = ws.gradFeatures.data();
    for (int i = 0; i < numFeatures; i++)
        gf[i] = g[i] / scale[i];
    double* gx = ws.gradLocal.data();
    std::fill(ws.gradLocal.begin(), ws.gradLocal.end(), 0.0);
    const double* sc = ws.scratch.data();
    for (const Block& b : blocks) {
        const int* idx = indices.data() + b.indexStart;
        const double* s = sc + b.scratchStart;
        if (b.kind == Distances || b.kind == Contacts) {
            for (int k = 0; k < b.count; k++) {
                const double* d = s + 5 * k;
                double factor;
                if (b.kind == Distances)
                    factor = gf[b.offset + k] / d[3];
                else {
                    double p = 0.5 * b.exponent, value = d[4];
                    double dsdx2 = -value * value * p * std::pow(d[3], p - 1.0);
                    factor = gf[b.offset + k] * dsdx2 * 2.0 / (b.r0 * b.r0);
                }
                double* gp = gx + 3 * idx[2 * k];
                double* gq = gx + 3 * idx[2 * k + 1];
                for (int j = 0; j < 3; j++) {
                    gq[j] += factor * d[j];
                    gp[j] -= factor * d[j];
                }
            }
        }
        else if (b.kind == Dihedrals) {
            int m = b.count / 2;
            for (int k = 0; k < m; k++) {
                const double* t = s + 11 * k;
                const double *b1 = t, *b2 = t + 3, *b3 = t + 6;
                double xx = t[9], y = t[10];
                double gs = gf[b.offset + k], gc = gf[b.offset + m + k];
                double n2 = xx * xx + y * y, n3 = n2 * std::sqrt(n2);
                double gy = (gs * xx * xx - gc * xx * y) / n3;
                double gX = (gc * y * y - gs * xx * y) / n3;
                double n12[3], n23[3], b3xb1[3], tmp1[3], tmp2[3];
                cross(b1, b2, n12);
                cross(b2, b3, n23);
                cross(b3, b1, b3xb1);
                double L = std::sqrt(dot(b2, b2));
                double T = dot(b1, n23);
                double gb1[3], gb2[3], gb3[3];
                cross(b2, n23, tmp1);  // dx/db1
                for (int j = 0; j < 3; j++)
                    gb1[j] = gy * L * n23[j] + gX * tmp1[j];
                cross(n23, b1, tmp1);
                cross(b3, n12, tmp2);  // dx/db2 = n23 x b1 + b3 x n12
                for (int j = 0; j < 3; j++)
                    gb2[j] = gy * (T / L * b2[j] + L * b3xb1[j]) + gX * (tmp1[j] + tmp2[j]);
                cross(n12, b2, tmp1);  // dx/db3
                for (int j = 0; j < 3; j++)
                    gb3[j] = gy * L * n12[j] + gX * tmp1[j];
                double* g0 = gx + 3 * idx[4 * k];
                double* g1 = gx + 3 * idx[4 * k + 1];
                double* g2 = gx + 3 * idx[4 * k + 2];
                double* g3 = gx + 3 * idx[4 * k + 3];
                for (int j = 0; j < 3; j++) {
                    g0[j] -= gb1[j];
                    g1[j] += gb1[j] - gb2[j];
                    g2[j] += gb2[j] - gb3[j];
                    g3[j] += gb3[j];
                }
            }
        }
        else {
            int n = b.numAtoms;
            const double* c = s;
            const double* rot = s + 3 * n;
            const double* V = rot + 9;
            const double* lambda = V + 9;
            const double* gout = gf + b.offset;
            const double* ref = reference.data() + b.referenceStart;
            // G_rot = c^T G_out
            double Grot[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
            for (int k = 0; k < n; k++)
                for (int a = 0; a < 3; a++)
                    for (int q = 0; q < 3; q++)
                        Grot[3 * a + q] += c[3 * k + a] * gout[3 * k + q];
            // M = rot^T G_rot; M' = V^T M V; K = M' / (lambda_i + lambda_j) off the diagonal; B = V K V^T
            double M[9], Mp[9], K[9], tmp[9], B[9], GC[9];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    M[3 * i + j] = rot[i] * Grot[j] + rot[3 + i] * Grot[3 + j] + rot[6 + i] * Grot[6 + j];
            for (int i = 0; i < 3; i++)
                for (int q = 0; q < 3; q++)
                    tmp[3 * i + q] = M[3 * i] * V[q] + M[3 * i + 1] * V[3 + q] + M[3 * i + 2] * V[6 + q];
            for (int p = 0; p < 3; p++)
                for (int q = 0; q < 3; q++)
                    Mp[3 * p + q] = V[p] * tmp[q] + V[3 + p] * tmp[3 + q] + V[6 + p] * tmp[6 + q];
            for (int p = 0; p < 3; p++)
                for (int q = 0; q < 3; q++)
                    K[3 * p + q] = p == q ? 0.0 : Mp[3 * p + q] / (lambda[p] + lambda[q]);
            for (int i = 0; i < 3; i++)
                for (int q = 0; q < 3; q++)
                    tmp[3 * i + q] = V[3 * i] * K[q] + V[3 * i + 1] * K[3 + q] + V[3 * i + 2] * K[6 + q];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    B[3 * i + j] = tmp[3 * i] * V[3 * j] + tmp[3 * i + 1] * V[3 * j + 1] + tmp[3 * i + 2] * V[3 * j + 2];
            // G_C = rot (B - B^T)
            for (int a = 0; a < 3; a++)
                for (int j = 0; j < 3; j++) {
                    double sum = 0;
                    for (int i = 0; i < 3; i++)
                        sum += rot[3 * a + i] * (B[3 * i + j] - B[3 * j + i]);
                    GC[3 * a + j] = sum;
                }
            // G_c = G_out rot^T + R G_C^T, then remove the mean (centring)
            double* gw = ws.blockGrad.data();
            double gmean[3] = {0, 0, 0};
            for (int k = 0; k < n; k++)
                for (int a = 0; a < 3; a++) {
                    double v = gout[3 * k] * rot[3 * a] + gout[3 * k + 1] * rot[3 * a + 1] + gout[3 * k + 2] * rot[3 * a + 2];
                    v += ref[3 * k] * GC[3 * a] + ref[3 * k + 1] * GC[3 * a + 1] + ref[3 * k + 2] * GC[3 * a + 2];
                    gw[3 * k + a] = v;
                    gmean[a] += v;
                }
            for (int k = 0; k < n; k++)
                for (int a = 0; a < 3; a++)
                    gw[3 * k + a] -= gmean[a] / n;
            if (ws.periodic) {
                const int* child = treeChild.data() + b.treeStart;
                const int* parent = treeParent.data() + b.treeStart;
                for (int e = n - 2; e >= 0; e--) {
                    int ch = child[e], pa = parent[e];
                    double* gc = gx + 3 * idx[ch];
                    double* gp = gx + 3 * idx[pa];
                    for (int j = 0; j < 3; j++) {
                        double v = gw[3 * ch + j];
                        gw[3 * pa + j] += v;
                        gc[j] += v;
                        gp[j] -= v;
                    }
                }
                double* g0 = gx + 3 * idx[0];
                for (int j = 0; j < 3; j++)
                    g0[j] += gw[j];
            }
            else
                for (int k = 0; k < n; k++)
                    for (int j = 0; j < 3; j++)
                        gx[3 * idx[k] + j] += gw[3 * k + j];
        }
    }
}

} // namespace LatentBiasPlugin
