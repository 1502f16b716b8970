#include "LatentBiasForce.h"
#include "internal/LatentBiasChecksum.h"
#include "internal/LatentBiasForceImpl.h"
#include "internal/LatentBiasGrid.h"
#include "internal/LatentBiasModel.h"
#include "internal/LatentBiasUtilities.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/AssertionUtilities.h"
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

using namespace LatentBiasPlugin;
using namespace OpenMM;
using namespace std;

LatentBiasForce::LatentBiasForce() : evaluationPath("auto"), modelNumAtoms(-1), modelLatentDim(-1), nativeDescription(false), usePeriodic(false), wallForceConstant(1000.0),
        gridScaleDefault(1.0) {
}

namespace {

/** Whether the last setModelData on this thread verified checksums (kept out of the class so that its public header,
 *  which every kernel includes, stays unchanged). */
thread_local bool lastModelVerified = false;

/** The warning for a model without checksums (model format 1 or a plain TorchScript archive), on stderr: OpenMM's
 *  C++ API has no other channel, and loading such a file silently would hide that nothing was verified. */
void warnUnverified(const string& what) {
    cerr << "LatentBiasForce: WARNING: " << what << " carries no checksums (model format 1, or a TorchScript archive "
            "without latentbias metadata), so it is loaded unverified: a damaged or edited file would go unnoticed. "
            "Re-export it with this latentbias to add them (latentbias.save_model, or write "
            "latentbias.export.archive_bytes(latentbias.load_model(path)) to a new file)." << endl;
}

} // namespace

LatentBiasForce::LatentBiasForce(const string& file) : LatentBiasForce() {
    ifstream in(file, ios::binary);
    if (!in)
        throw OpenMMException("LatentBiasForce: cannot open the model file '" + file + "'");
    stringstream buffer;
    buffer << in.rdbuf();
    if (!in && !in.eof())
        throw OpenMMException("LatentBiasForce: cannot read the model file '" + file + "'");
    try {
        setModelData(buffer.str());
    }
    catch (const OpenMMException& e) {  // every refusal names the file
        string what = e.what();
        const string prefix = "LatentBiasForce: ";
        if (what.compare(0, prefix.size(), prefix) == 0)
            what = what.substr(prefix.size());
        throw OpenMMException("LatentBiasForce: model file '" + file + "': " + what);
    }
    if (!lastModelVerified)
        warnUnverified("the model file '" + file + "'");
    this->file = file;
}

LatentBiasForce* LatentBiasForce::fromModelData(const string& modelData) {
    LatentBiasForce* force = new LatentBiasForce();
    try {
        force->setModelData(modelData);
    }
    catch (...) {
        delete force;
        throw;
    }
    if (!lastModelVerified)
        warnUnverified("the model data given to LatentBiasForce.fromModelData (or a serialized force)");
    return force;
}

namespace {

/** Text with every byte that is not part of valid UTF-8 (or is a control character other than newline and tab)
 *  written as \xNN: messages quote names and errors read from damaged archives, and Python must be able to decode
 *  them (SWIG would raise UnicodeDecodeError instead of the OpenMMException). */
string printable(const string& text) {
    string out;
    for (size_t i = 0; i < text.size();) {
        unsigned char c = text[i];
        int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        bool valid = extra >= 0 && i + extra < text.size() && (c >= 0x20 || c == '\n' || c == '\t') && c != 0x7F;
        for (int k = 1; valid && k <= extra; k++)
            valid = ((unsigned char) text[i + k] >> 6) == 2;
        if (valid) {
            out.append(text, i, extra + 1);
            i += extra + 1;
        }
        else {
            char buffer[8];
            snprintf(buffer, sizeof(buffer), "\\x%02x", c);
            out += buffer;
            i++;
        }
    }
    return out;
}

} // namespace

void LatentBiasForce::setModelData(const string& data) {
    try {
        if (data.empty())
            throw OpenMMException("LatentBiasForce: the model data are empty");
        // The checksums a latentbias model file carries (format 2) are verified before any of its code is loaded, as
        // latentbias.load_model does: a flipped byte or an edited weight must not silently change the physics.
        lastModelVerified = false;
        bool verified = verifyModelChecksums(data);
        string meta;
        loadLatentModel(data, &meta);  // validates the archive
        long long nAtoms = -1, latentDim = -1;
        if (!meta.empty()) {
            if (!findTopLevelJsonInteger(meta, "n_atoms", nAtoms) || nAtoms <= 0)
                throw OpenMMException("LatentBiasForce: the model metadata (latentbias.json) has no valid n_atoms");
            if (!findTopLevelJsonInteger(meta, "latent_dim", latentDim) || latentDim <= 0)
                throw OpenMMException("LatentBiasForce: the model metadata (latentbias.json) has no valid latent_dim");
        }
        // A native description is validated now (a bad one is refused with the reason, never evaluated).
        LatentBiasNativeModel native;
        bool hasNative = loadNativeModel(data, native);
        if (hasNative && !meta.empty() && (native.getNumAtoms() != nAtoms || native.getLatentDim() != latentDim))
            throw OpenMMException("LatentBiasForce: the model's native description (latentbias_native.json) does not "
                                  "match its metadata (n_atoms / latent_dim); re-export the model with "
                                  "latentbias.save_model");
        if (!hasNative && evaluationPath == "native")
            throw OpenMMException("LatentBiasForce: the evaluation path is \"native\" but the new model has no native "
                                  "description");
        modelData = data;
        metadata = meta;
        nativeDescription = hasNative;
        modelNumAtoms = (int) nAtoms;
        modelLatentDim = (int) latentDim;
        lastModelVerified = verified;
    }
    catch (const OpenMMException& e) {  // names and errors from a damaged archive may not be valid UTF-8
        throw OpenMMException(printable(e.what()));
    }
}

void LatentBiasForce::setEvaluationPath(const string& path) {
    if (path != "auto" && path != "native" && path != "torch")
        throw OpenMMException("LatentBiasForce::setEvaluationPath: the path must be \"auto\", \"native\" or "
                              "\"torch\", got \"" + path + "\"");
    if (path == "native" && !nativeDescription)
        throw OpenMMException("LatentBiasForce::setEvaluationPath: this model has no native description (only models "
                              "exported by latentbias.save_model carry one: a featurizer of latentbias.features, its "
                              "Standardizer and an MLP); use \"torch\" or \"auto\"");
    evaluationPath = path;
}

string LatentBiasForce::getResolvedEvaluationPath() const {
    if (evaluationPath == "auto")
        return nativeDescription ? "native" : "torch";
    return evaluationPath;
}

string LatentBiasForce::getEvaluationPathInContext(Context& context) const {
    return dynamic_cast<const LatentBiasForceImpl&>(getImplInContext(context)).getEvaluationPath();
}

void LatentBiasForce::setModelLatentDim(int latentDim) {
    if (latentDim <= 0)
        throw OpenMMException("LatentBiasForce::setModelLatentDim: latentDim must be positive");
    for (const auto& d : gridDims)
        if (d.component >= latentDim)
            throw OpenMMException("LatentBiasForce::setModelLatentDim: a grid dimension uses a larger component");
    for (const auto& r : restraints)
        if (r.component >= latentDim)
            throw OpenMMException("LatentBiasForce::setModelLatentDim: a restraint uses a larger component");
    modelLatentDim = latentDim;
}

void LatentBiasForce::setUsesPeriodicBoundaryConditions(bool periodic) {
    usePeriodic = periodic;
}

bool LatentBiasForce::usesPeriodicBoundaryConditions() const {
    return usePeriodic;
}

void LatentBiasForce::checkComponent(int component) const {
    if (component < 0 || (modelLatentDim >= 0 && component >= modelLatentDim)) {
        stringstream msg;
        msg << "LatentBiasForce: latent component " << component << " does not exist";
        if (modelLatentDim >= 0)
            msg << " (the model returns " << modelLatentDim << " components)";
        throw OpenMMException(msg.str());
    }
}

// -------------------------------------------------------------------------------------------------------- grid

int LatentBiasForce::addGridDimension(int component, double minValue, double maxValue, int size, bool periodic) {
    if ((int) gridDims.size() >= MaxGridDimensions)
        throw OpenMMException("LatentBiasForce: a grid has at most 3 dimensions");
    checkComponent(component);
    for (const auto& d : gridDims)
        if (d.component == component)
            throw OpenMMException("LatentBiasForce: each latent component may appear only once in the grid");
    if (!(std::isfinite(minValue) && std::isfinite(maxValue) && minValue < maxValue))
        throw OpenMMException("LatentBiasForce: a grid dimension needs finite minValue < maxValue");
    if (size < (periodic ? 3 : 2))
        throw OpenMMException(periodic ? "LatentBiasForce: a periodic grid dimension needs at least 3 points"
                                       : "LatentBiasForce: a grid dimension needs at least 2 points");
    long long total = size;
    for (const auto& d : gridDims)
        total *= d.size;  // each factor < 2^22 after the check below, so no overflow in 64 bits
    if (size > MaxGridPoints || total > MaxGridPoints) {
        stringstream msg;
        msg << "LatentBiasForce: a grid of ";
        for (const auto& d : gridDims)
            msg << d.size << " x ";
        msg << size << " points is larger than the " << MaxGridPoints << " points allowed; use fewer points per "
            << "dimension (e.g. 50-200)";
        throw OpenMMException(msg.str());
    }
    gridDims.push_back({component, minValue, maxValue, size, periodic});
    gridValues.clear();
    gridNodeDerivatives.clear();
    gridEpoch = nextGridEpoch();
    gridDeposits.clear();
    return gridDims.size() - 1;
}

void LatentBiasForce::getGridDimensionParameters(int index, int& component, double& minValue, double& maxValue,
                                                 int& size, bool& periodic) const {
    ASSERT_VALID_INDEX(index, gridDims);
    const GridDimension& d = gridDims[index];
    component = d.component;
    minValue = d.minValue;
    maxValue = d.maxValue;
    size = d.size;
    periodic = d.periodic;
}

void LatentBiasForce::checkGridValues(const vector<double>& values) const {
    if (gridDims.empty())
        throw OpenMMException("LatentBiasForce: add the grid dimensions before setting grid values");
    size_t total = 1;
    int n[3] = {1, 1, 1};
    for (size_t k = 0; k < gridDims.size(); k++) {
        n[k] = gridDims[k].size;
        total *= n[k];
    }
    if (values.size() != total) {
        stringstream msg;
        msg << "LatentBiasForce: the grid has " << total << " points (";
        for (size_t k = 0; k < gridDims.size(); k++)
            msg << (k > 0 ? " x " : "") << gridDims[k].size;
        msg << ") but " << values.size() << " values were given";
        throw OpenMMException(msg.str());
    }
    for (size_t i = 0; i < values.size(); i++)
        if (!std::isfinite(values[i])) {
            stringstream msg;
            msg << "LatentBiasForce: grid value " << i << " is not finite (" << values[i] << ")";
            throw OpenMMException(msg.str());
        }
    // Along a periodic dimension the last plane duplicates the first (OpenMM's periodic splines require it).
    int k = LatentBiasGrid::periodicPlaneMismatch(values.data(), n, periodicDims());
    if (k >= 0) {
        stringstream msg;
        msg << "LatentBiasForce: grid dimension " << k << " is periodic, so its last grid point must repeat the "
            << "first (equal values), but they differ";
        throw OpenMMException(msg.str());
    }
}

vector<bool> LatentBiasForce::periodicDims() const {
    vector<bool> periodic;
    for (const GridDimension& d : gridDims)
        periodic.push_back(d.periodic);
    return periodic;
}

void LatentBiasForce::setGridValues(const vector<double>& values) {
    checkGridValues(values);
    gridValues = values;
    gridNodeDerivatives.clear();
    if (gridInterpolation == "hermite" && !values.empty()) {   // the spline's node derivatives of the values
        vector<LatentBiasGrid::Axis> axes;
        for (const GridDimension& d : gridDims)
            axes.push_back({d.minValue, d.maxValue, d.size, d.periodic});
        LatentBiasGrid spline;
        spline.initialize(axes, values, true);
        const auto& derivs = spline.getNodeDerivatives();
        for (size_t mask = 1; mask < derivs.size(); mask++)
            gridNodeDerivatives.insert(gridNodeDerivatives.end(), derivs[mask].begin(), derivs[mask].end());
    }
    gridEpoch = nextGridEpoch();
    gridDeposits.clear();
}

long long LatentBiasForce::nextGridEpoch() {
    static std::atomic<long long> counter(0);
    return ++counter;
}

void LatentBiasForce::addGridGaussian(const vector<double>& center, const vector<double>& width, double height,
                                      double cutoff) {
    if (gridDims.empty())
        throw OpenMMException("LatentBiasForce::addGridGaussian: add the grid dimensions first");
    int ndim = gridDims.size();
    if ((int) center.size() != ndim || (int) width.size() != ndim) {
        stringstream msg;
        msg << "LatentBiasForce::addGridGaussian: the grid has " << ndim << " dimensions but " << center.size()
            << " centre and " << width.size() << " width values were given";
        throw OpenMMException(msg.str());
    }
    for (int k = 0; k < ndim; k++)
        if (!std::isfinite(center[k]) || !(std::isfinite(width[k]) && width[k] > 0)) {
            stringstream msg;
            msg << "LatentBiasForce::addGridGaussian: dimension " << k << " has centre " << center[k] << " and width "
                << width[k] << "; both must be finite and the width > 0";
            throw OpenMMException(msg.str());
        }
    if (!std::isfinite(height)) {
        stringstream msg;
        msg << "LatentBiasForce::addGridGaussian: the height must be finite, got " << height;
        throw OpenMMException(msg.str());
    }
    if (!(std::isfinite(cutoff) && cutoff >= 0)) {
        stringstream msg;
        msg << "LatentBiasForce::addGridGaussian: the cutoff (in widths) must be finite and >= 0 (0: none), got "
            << cutoff;
        throw OpenMMException(msg.str());
    }
    vector<vector<double> > factor(3, vector<double>(1, 1.0));
    int n[3] = {1, 1, 1};
    for (int k = 0; k < ndim; k++) {
        const GridDimension& d = gridDims[k];
        factor[k] = LatentBiasGrid::gaussianFactor({d.minValue, d.maxValue, d.size, d.periodic}, center[k], width[k],
                                                   cutoff);
        n[k] = d.size;
    }
    if (gridInterpolation == "hermite") {   // exact values and node derivatives on the support
        vector<LatentBiasGrid::Axis> axes;
        for (const GridDimension& d : gridDims)
            axes.push_back({d.minValue, d.maxValue, d.size, d.periodic});
        vector<double*> arrays = hermiteArrays();
        LatentBiasGrid::addGaussianToTable(axes, center, width, height, cutoff, arrays.data());
    }
    else {
    if (gridValues.empty())
        gridValues.assign((size_t) n[0] * n[1] * n[2], 0.0);
    // only the nodes where every factor is non-zero change (a truncated Gaussian's support; the whole grid for an
    // untruncated one): the sum is the same as over the whole grid
    int lo[3], hi[3];
    for (int k = 0; k < 3; k++) {
        lo[k] = 0;
        hi[k] = n[k] - 1;
        while (lo[k] <= hi[k] && factor[k][lo[k]] == 0.0)
            lo[k]++;
        while (hi[k] >= lo[k] && factor[k][hi[k]] == 0.0)
            hi[k]--;
    }
    for (int i2 = lo[2]; i2 <= hi[2]; i2++)
        for (int i1 = lo[1]; i1 <= hi[1]; i1++) {
            size_t node = (size_t) lo[0] + (size_t) n[0] * (i1 + (size_t) n[1] * i2);
            for (int i0 = lo[0]; i0 <= hi[0]; i0++, node++)
                gridValues[node] += height * factor[0][i0] * factor[1][i1] * factor[2][i2];
        }
    }
    if (gridDeposits.size() >= (size_t) MaxLoggedDeposits) {
        gridEpoch = nextGridEpoch();
        gridDeposits.clear();
    }
    else
        gridDeposits.push_back({center, width, height, cutoff});
}

void LatentBiasForce::setWallForceConstant(double k) {
    if (!(std::isfinite(k) && k >= 0))
        throw OpenMMException("LatentBiasForce: the wall force constant must be finite and >= 0");
    wallForceConstant = k;
}

void LatentBiasForce::setGridScaleParameter(const string& name, double defaultValue) {
    if (!std::isfinite(defaultValue))
        throw OpenMMException("LatentBiasForce: the grid scale default must be finite");
    for (const auto& r : restraints)
        if (!name.empty() && (r.centerParameter == name || r.forceConstantParameter == name))
            throw OpenMMException("LatentBiasForce: the grid scale parameter '" + name + "' is a restraint parameter");
    if (!name.empty() && name == gridNormalizationParameter)
        throw OpenMMException("LatentBiasForce: the grid scale parameter '" + name + "' is the grid normalization "
                              "parameter");
    gridScaleParameter = name;
    gridScaleDefault = name.empty() ? 1.0 : defaultValue;
}

// -------------------------------------------------------------------------------------------------- restraints

static void checkRestraint(double defaultForceConstant, double period, double lowerWall, double upperWall,
                           double wallForceConstant) {
    if (!(defaultForceConstant >= 0) || !std::isfinite(defaultForceConstant))
        throw OpenMMException("LatentBiasForce: a restraint force constant must be finite and >= 0");
    if (!(period >= 0) || !std::isfinite(period))
        throw OpenMMException("LatentBiasForce: a restraint period must be finite and >= 0 (0: not periodic)");
    if (std::isnan(lowerWall) || std::isnan(upperWall) || !(lowerWall < upperWall))
        throw OpenMMException("LatentBiasForce: a restraint's lower wall must lie below its upper wall");
    if (!(wallForceConstant >= 0) || !std::isfinite(wallForceConstant))
        throw OpenMMException("LatentBiasForce: a restraint wall force constant must be finite and >= 0");
}

int LatentBiasForce::addRestraint(int component, const string& centerParameter, double defaultCenter,
                                  const string& forceConstantParameter, double defaultForceConstant, double period,
                                  double lowerWall, double upperWall, double wallForceConstant) {
    int index = restraints.size();
    restraints.push_back(Restraint());
    try {
        setRestraintParameters(index, component, centerParameter, defaultCenter, forceConstantParameter,
                               defaultForceConstant, period, lowerWall, upperWall, wallForceConstant);
    }
    catch (...) {
        restraints.pop_back();
        throw;
    }
    return index;
}

void LatentBiasForce::getRestraintParameters(int index, int& component, string& centerParameter, double& defaultCenter,
                                             string& forceConstantParameter, double& defaultForceConstant,
                                             double& period, double& lowerWall, double& upperWall,
                                             double& wallForceConstant) const {
    ASSERT_VALID_INDEX(index, restraints);
    const Restraint& r = restraints[index];
    component = r.component;
    centerParameter = r.centerParameter;
    defaultCenter = r.defaultCenter;
    forceConstantParameter = r.forceConstantParameter;
    defaultForceConstant = r.defaultForceConstant;
    period = r.period;
    lowerWall = r.lowerWall;
    upperWall = r.upperWall;
    wallForceConstant = r.wallForceConstant;
}

void LatentBiasForce::setRestraintParameters(int index, int component, const string& centerParameter,
                                             double defaultCenter, const string& forceConstantParameter,
                                             double defaultForceConstant, double period, double lowerWall,
                                             double upperWall, double wallForceConstant) {
    ASSERT_VALID_INDEX(index, restraints);
    checkComponent(component);
    checkRestraint(defaultForceConstant, period, lowerWall, upperWall, wallForceConstant);
    if (!std::isfinite(defaultCenter))
        throw OpenMMException("LatentBiasForce: a restraint centre must be finite");
    Restraint r;
    r.component = component;
    r.centerParameter = centerParameter.empty() ? "latent_z0_" + to_string(index) : centerParameter;
    r.forceConstantParameter = forceConstantParameter.empty() ? "latent_k_" + to_string(index) : forceConstantParameter;
    if (r.centerParameter == r.forceConstantParameter)
        throw OpenMMException("LatentBiasForce: a restraint's centre and force constant need different parameter names");
    if (!gridScaleParameter.empty() && (r.centerParameter == gridScaleParameter || r.forceConstantParameter == gridScaleParameter))
        throw OpenMMException("LatentBiasForce: '" + gridScaleParameter + "' is the grid scale parameter");
    if (!gridNormalizationParameter.empty() && (r.centerParameter == gridNormalizationParameter ||
                                                r.forceConstantParameter == gridNormalizationParameter))
        throw OpenMMException("LatentBiasForce: '" + gridNormalizationParameter + "' is the grid normalization parameter");
    r.defaultCenter = defaultCenter;
    r.defaultForceConstant = defaultForceConstant;
    r.period = period;
    r.lowerWall = lowerWall;
    r.upperWall = upperWall;
    r.wallForceConstant = wallForceConstant;
    // A parameter name may be shared (e.g. one force constant for all restraints) only with the same default and
    // the same role.
    for (int i = 0; i < (int) restraints.size(); i++) {
        if (i == index)
            continue;
        const Restraint& o = restraints[i];
        if ((o.centerParameter == r.centerParameter && o.defaultCenter != r.defaultCenter) ||
                (o.forceConstantParameter == r.forceConstantParameter && o.defaultForceConstant != r.defaultForceConstant) ||
                o.centerParameter == r.forceConstantParameter || o.forceConstantParameter == r.centerParameter)
            throw OpenMMException("LatentBiasForce: global parameter names of different roles or defaults collide ('" +
                                  r.centerParameter + "', '" + r.forceConstantParameter + "')");
    }
    restraints[index] = r;
}

void LatentBiasForce::setRestraintPeriod(int index, double period) {
    ASSERT_VALID_INDEX(index, restraints);
    Restraint r = restraints[index];
    setRestraintParameters(index, r.component, r.centerParameter, r.defaultCenter, r.forceConstantParameter,
                           r.defaultForceConstant, period, r.lowerWall, r.upperWall, r.wallForceConstant);
}

void LatentBiasForce::setRestraintWalls(int index, double lowerWall, double upperWall, double wallForceConstant) {
    ASSERT_VALID_INDEX(index, restraints);
    Restraint r = restraints[index];
    setRestraintParameters(index, r.component, r.centerParameter, r.defaultCenter, r.forceConstantParameter,
                           r.defaultForceConstant, r.period, lowerWall, upperWall, wallForceConstant);
}

vector<pair<string, double> > LatentBiasForce::getGlobalParameters() const {
    vector<pair<string, double> > params;
    auto add = [&](const string& name, double value) {
        for (const auto& p : params)
            if (p.first == name)
                return;
        params.push_back(make_pair(name, value));
    };
    if (!gridScaleParameter.empty())
        add(gridScaleParameter, gridScaleDefault);
    if (!gridNormalizationParameter.empty())
        add(gridNormalizationParameter, gridNormalizationDefault);
    for (const auto& r : restraints) {
        add(r.centerParameter, r.defaultCenter);
        add(r.forceConstantParameter, r.defaultForceConstant);
    }
    return params;
}

int LatentBiasForce::getNumGlobalParameters() const {
    return getGlobalParameters().size();
}

const string& LatentBiasForce::getGlobalParameterName(int index) const {
    if (index < 0 || index >= getNumGlobalParameters())
        throw OpenMMException("LatentBiasForce: global parameter index out of range");
    if (!gridScaleParameter.empty() && index == 0)
        return gridScaleParameter;
    string name = getGlobalParameters()[index].first;
    if (name == gridNormalizationParameter)
        return gridNormalizationParameter;
    for (const auto& r : restraints) {
        if (r.centerParameter == name)
            return r.centerParameter;
        if (r.forceConstantParameter == name)
            return r.forceConstantParameter;
    }
    throw OpenMMException("LatentBiasForce: unknown global parameter");
}

double LatentBiasForce::getGlobalParameterDefaultValue(int index) const {
    if (index < 0 || index >= getNumGlobalParameters())
        throw OpenMMException("LatentBiasForce: global parameter index out of range");
    return getGlobalParameters()[index].second;
}

// ----------------------------------------------------------------------------------------------------- context

ForceImpl* LatentBiasForce::createImpl() const {
    return new LatentBiasForceImpl(*this);
}

static const LatentBiasForceImpl& implOf(const Force& force, ForceImpl& impl) {
    return dynamic_cast<const LatentBiasForceImpl&>(impl);
}

void LatentBiasForce::updateParametersInContext(Context& context) {
    dynamic_cast<LatentBiasForceImpl&>(getImplInContext(context)).updateParametersInContext(getContextImpl(context));
}

vector<double> LatentBiasForce::getLastLatentValues(Context& context) const {
    return implOf(*this, getImplInContext(context)).getLastLatentValues();
}

vector<double> LatentBiasForce::getLastEnergies(Context& context) const {
    return implOf(*this, getImplInContext(context)).getLastEnergies();
}

bool LatentBiasForce::isLastEvaluationCurrent(Context& context) const {
    return dynamic_cast<LatentBiasForceImpl&>(getImplInContext(context)).isLastEvaluationCurrent(getContextImpl(context));
}
